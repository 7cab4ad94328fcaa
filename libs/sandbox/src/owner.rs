//! Per-owner host identities and handing a step's writable paths to them.
//!
//! Every owner's steps run as one host uid (and gid of the same number) from
//! a range no real account uses, chosen by a hash of the owner id: the same
//! on every host and replica with no shared table, and meaningful to
//! RLIMIT_NPROC (which counts per real uid). With the default range of 2^30
//! uids, two of 1000 owners share a uid with probability ~5e-4; two owners
//! sharing one could reach each other's writable caches, nothing else
//! (workspaces and data are hidden per step).

use std::{
    hash::Hasher,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use nix::{
    dir::{Dir, Type},
    fcntl::{AtFlags, OFlag},
    sys::stat::Mode,
    unistd::{Gid, Uid, fchown, fchownat},
};

/// The first uid of the owners' range: above every distribution's regular
/// and subordinate (`/etc/subuid`) ranges in common use.
pub const DEFAULT_UID_BASE: u32 = 1 << 30;
/// The size of the range.
pub const DEFAULT_UID_COUNT: u32 = 1 << 30;
/// Entries handed over in one call, at most (a bound on outside input).
const MAX_GRANT_ENTRIES: usize = 2_000_000;

/// A host uid and gid a step runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

impl Identity {
    /// The identity of `owner` in `[base, base + count)`: FNV-1a of the id.
    pub fn for_owner(owner: &str, base: u32, count: u32) -> Self {
        let mut hasher = Fnv1a::default();
        hasher.write(owner.as_bytes());
        let count = u64::from(count.max(1));
        let offset = u32::try_from(hasher.finish() % count).unwrap_or(0);
        let uid = base.saturating_add(offset).max(1);
        Self { uid, gid: uid }
    }

    /// `setpriv` options: the uid and gid, no supplementary groups, no
    /// capabilities in any set, and no way back up (no_new_privs).
    pub fn setpriv_args(&self) -> Vec<String> {
        vec![
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--clear-groups".into(),
            "--inh-caps=-all".into(),
            "--bounding-set=-all".into(),
            "--no-new-privs".into(),
            "--".into(),
        ]
    }

    /// The name programs see in `$USER`.
    pub fn user_name(&self) -> String {
        format!("rr{}", self.uid)
    }
}

/// FNV-1a, 64 bits: stable across Rust versions (unlike `DefaultHasher`).
#[derive(Debug)]
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Makes `identity` the owner of every path in `paths` and everything below
/// them. Walks by directory descriptors and never follows a symbolic link,
/// so a step that swaps a directory for a link while this runs cannot turn
/// the walk onto host files. Bounded by [`MAX_GRANT_ENTRIES`].
pub fn grant(identity: Identity, paths: &[PathBuf]) -> Result<(), (PathBuf, std::io::Error)> {
    let uid = Some(Uid::from_raw(identity.uid));
    let gid = Some(Gid::from_raw(identity.gid));
    let mut budget = MAX_GRANT_ENTRIES;
    for path in paths {
        let dir = match Dir::open(
            path.as_path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(dir) => dir,
            // Missing paths are made by the step itself (or not needed).
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err((path.clone(), e.into())),
        };
        fchown(dir.as_fd(), uid, gid).map_err(|e| (path.clone(), e.into()))?;
        grant_below(dir, uid, gid, &mut budget).map_err(|e| (path.clone(), e))?;
    }
    Ok(())
}

fn grant_below(dir: Dir, uid: Option<Uid>, gid: Option<Gid>, budget: &mut usize) -> std::io::Result<()> {
    let mut stack = vec![dir];
    while let Some(mut dir) = stack.pop() {
        let mut subdirs = Vec::new();
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let name = entry.file_name().to_owned();
            if name.as_bytes() == b"." || name.as_bytes() == b".." {
                continue;
            }
            if *budget == 0 {
                return Err(std::io::Error::other(format!(
                    "more than {MAX_GRANT_ENTRIES} entries to hand over"
                )));
            }
            *budget -= 1;
            names.push((name, entry.file_type()));
        }
        for (name, kind) in names {
            fchownat(
                dir.as_fd(),
                name.as_c_str(),
                uid,
                gid,
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
            if matches!(kind, Some(Type::Directory) | None) {
                match Dir::openat(
                    dir.as_fd(),
                    name.as_c_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(sub) => subdirs.push(sub),
                    // Not a directory (any more), or a link: nothing below to hand over.
                    Err(
                        nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP | nix::errno::Errno::ENOENT,
                    ) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        stack.extend(subdirs);
    }
    Ok(())
}

/// Whether `path` is owned by `identity` (for tests and checks).
pub fn owned_by(path: &Path, identity: Identity) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.uid() == identity.uid && m.gid() == identity.gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_stable_in_range_and_differ_by_owner() {
        let a = Identity::for_owner("user-a", DEFAULT_UID_BASE, DEFAULT_UID_COUNT);
        assert_eq!(
            a,
            Identity::for_owner("user-a", DEFAULT_UID_BASE, DEFAULT_UID_COUNT)
        );
        assert_ne!(
            a,
            Identity::for_owner("user-b", DEFAULT_UID_BASE, DEFAULT_UID_COUNT)
        );
        assert!(a.uid >= DEFAULT_UID_BASE && a.uid < DEFAULT_UID_BASE + DEFAULT_UID_COUNT);
        assert_eq!(a.uid, a.gid);
        let small = Identity::for_owner("x", 5000, 10);
        assert!((5000..5010).contains(&small.uid));
    }

    #[test]
    fn setpriv_drops_every_capability_and_group() {
        let args = Identity { uid: 7, gid: 8 }.setpriv_args();
        for wanted in [
            "--reuid=7",
            "--regid=8",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
        ] {
            assert!(args.iter().any(|a| a == wanted), "{wanted} missing in {args:?}");
        }
        assert_eq!(args.last().map(String::as_str), Some("--"));
    }
}

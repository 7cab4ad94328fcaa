//! A step's limits: rlimits through `prlimit`, a cgroup v2 where one can be
//! made, and what a step that hit one of them looks like from outside.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// The limits of one step; 0 means none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Private writable memory per process (RLIMIT_DATA), or the cgroup's
    /// memory.max.
    pub memory_bytes: u64,
    /// CPU share in millicores (cgroup cpu.max; with a run time also the
    /// CPU-seconds rlimit).
    pub cpu_millis: u32,
    /// Processes and threads of the step's uid (RLIMIT_NPROC), or the
    /// cgroup's pids.max.
    pub max_processes: u32,
    pub max_open_files: u32,
    /// The largest file a process may write (RLIMIT_FSIZE).
    pub max_file_bytes: u64,
    pub max_runtime_seconds: u32,
}

/// Moves the shell into the cgroup whose `cgroup.procs` is `$0`, then
/// becomes the rest of the command line (same pid, same group).
pub(crate) const CGROUP_JOIN: &str = r#"echo $$ > "$0" && exec "$@""#;

/// The `prlimit` options for `limits` (`--nproc` only when no cgroup bounds
/// the processes).
pub(crate) fn rlimit_args(limits: &Limits, pids_in_cgroup: bool) -> Vec<String> {
    let mut args = Vec::new();
    if limits.memory_bytes > 0 {
        args.push(format!("--data={}", limits.memory_bytes));
    }
    if limits.max_open_files > 0 {
        args.push(format!("--nofile={}", limits.max_open_files));
    }
    if limits.max_processes > 0 && !pids_in_cgroup {
        args.push(format!("--nproc={}", limits.max_processes));
    }
    if limits.max_file_bytes > 0 {
        args.push(format!("--fsize={}", limits.max_file_bytes));
    }
    if limits.cpu_millis > 0 && limits.max_runtime_seconds > 0 {
        // The CPU time the process could use at its share for its whole run.
        let seconds = (u64::from(limits.max_runtime_seconds) * u64::from(limits.cpu_millis)).div_ceil(1000);
        args.push(format!("--cpu={}", seconds.max(1)));
    }
    args
}

/// Checks that `parent` is (or can be made) a cgroup v2 directory with the
/// memory, cpu and pids controllers enabled for its children.
pub(crate) fn prepare_cgroup_parent(parent: &Path) -> Result<PathBuf, String> {
    let unavailable = |why: String| Err(format!("cgroup v2 limits unavailable ({why}); rlimits only"));
    let Some(grandparent) = parent.parent() else {
        return unavailable("cgroup_parent has no parent".into());
    };
    // Never create directories outside a cgroup2 tree.
    if !grandparent.join("cgroup.controllers").is_file() {
        return unavailable(format!("{} is not a cgroup v2 directory", grandparent.display()));
    }
    if !parent.is_dir()
        && let Err(err) = std::fs::create_dir(parent)
    {
        return unavailable(format!("cannot create {}: {err}", parent.display()));
    }
    let controllers = std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    let missing: Vec<&str> = ["memory", "cpu", "pids"]
        .into_iter()
        .filter(|c| !controllers.split_whitespace().any(|have| have == *c))
        .collect();
    if !missing.is_empty() {
        return unavailable(format!(
            "controllers {} are not delegated to {}",
            missing.join(", "),
            parent.display()
        ));
    }
    if let Err(err) = std::fs::write(parent.join("cgroup.subtree_control"), "+memory +cpu +pids") {
        return unavailable(format!(
            "cannot enable controllers in {}: {err}",
            parent.display()
        ));
    }
    Ok(parent.to_path_buf())
}

/// Makes `<parent>/<name>` with the limits written into it.
pub(crate) fn make_cgroup(parent: &Path, name: &str, limits: &Limits) -> std::io::Result<PathBuf> {
    let dir = parent.join(name);
    std::fs::create_dir(&dir)?;
    let write = |file: &str, value: String| std::fs::write(dir.join(file), value);
    let result = (|| {
        if limits.memory_bytes > 0 {
            write("memory.max", limits.memory_bytes.to_string())?;
            // Where swap accounting exists, no swapping around the limit.
            let _ = write("memory.swap.max", "0".into());
        }
        if limits.max_processes > 0 {
            write("pids.max", limits.max_processes.to_string())?;
        }
        if limits.cpu_millis > 0 {
            write(
                "cpu.max",
                format!("{} 100000", u64::from(limits.cpu_millis) * 100),
            )?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(dir),
        Err(err) => {
            let _ = std::fs::remove_dir(&dir);
            Err(err)
        }
    }
}

/// Kills everything in a cgroup and removes it (waits up to a second for it
/// to empty).
pub(crate) async fn remove_cgroup(dir: &Path) {
    let _ = tokio::fs::write(dir.join("cgroup.kill"), "1").await;
    for _ in 0..20 {
        if tokio::fs::remove_dir(dir).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(cgroup = %dir.display(), "cannot remove a step cgroup");
}

/// A limit a step ran into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitHit {
    /// `memory`, `processes`, `cpu time`, `file size` or `open files`.
    pub limit: &'static str,
    /// The configured value, as a person reads it (`1 GiB`, `256`).
    pub value: String,
    /// The line that showed it, or the signal.
    pub evidence: String,
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped by the sandbox's {} limit ({}): {}",
            self.limit, self.value, self.evidence
        )
    }
}

fn bytes(n: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if n >= GIB && n.is_multiple_of(GIB) {
        format!("{} GiB", n / GIB)
    } else if n >= MIB {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

/// What the last lines and exit status of a step say about its limits:
/// SIGXCPU and SIGXFSZ (exit 152, 153) are the kernel's own word; allocation
/// and fork failures are recognised by what the common runtimes print
/// (rlimits give no other signal; a cgroup v2 would count them exactly).
pub fn limit_hit(exit_code: i32, tail: &[String], limits: &Limits) -> Option<LimitHit> {
    let hit = |limit, value: String, evidence: &str| {
        Some(LimitHit {
            limit,
            value,
            evidence: evidence.chars().take(200).collect(),
        })
    };
    if limits.cpu_millis > 0 && limits.max_runtime_seconds > 0 && exit_code == 128 + 24 {
        return hit(
            "cpu time",
            format!("{} ms/s", limits.cpu_millis),
            "killed by SIGXCPU",
        );
    }
    if limits.max_file_bytes > 0 && exit_code == 128 + 25 {
        return hit("file size", bytes(limits.max_file_bytes), "killed by SIGXFSZ");
    }
    const MEMORY: &[&str] = &[
        "MemoryError",
        "Cannot allocate memory",
        "cannot allocate memory",
        "out of memory",
        "Out of memory",
        "std::bad_alloc",
        "JavaScript heap out of memory",
        "memory allocation of",
        "failed to allocate",
    ];
    const PROCESSES: &[&str] = &[
        "Resource temporarily unavailable",
        "fork: retry",
        "Cannot fork",
        "can't fork",
        "cannot fork",
        "BlockingIOError: [Errno 11]",
        "EAGAIN",
        "pthread_create failed",
    ];
    const FILES: &[&str] = &["Too many open files", "EMFILE"];
    for line in tail.iter().rev() {
        if limits.memory_bytes > 0 && MEMORY.iter().any(|m| line.contains(m)) {
            return hit("memory", bytes(limits.memory_bytes), line);
        }
        if limits.max_processes > 0 && PROCESSES.iter().any(|m| line.contains(m)) {
            return hit("processes", limits.max_processes.to_string(), line);
        }
        if limits.max_open_files > 0 && FILES.iter().any(|m| line.contains(m)) {
            return hit("open files", limits.max_open_files.to_string(), line);
        }
        if limits.max_file_bytes > 0 && line.contains("File too large") {
            return hit("file size", bytes(limits.max_file_bytes), line);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimits_map_to_prlimit_options() {
        let limits = Limits {
            memory_bytes: 1 << 30,
            cpu_millis: 500,
            max_processes: 64,
            max_open_files: 1024,
            max_file_bytes: 1 << 20,
            max_runtime_seconds: 10,
        };
        assert_eq!(
            rlimit_args(&limits, false),
            [
                "--data=1073741824",
                "--nofile=1024",
                "--nproc=64",
                "--fsize=1048576",
                "--cpu=5"
            ]
        );
        assert!(
            !rlimit_args(&limits, true)
                .iter()
                .any(|a| a.starts_with("--nproc"))
        );
        assert!(rlimit_args(&Limits::default(), false).is_empty());
    }

    #[test]
    fn limits_are_named_from_the_tail() {
        let limits = Limits {
            memory_bytes: 1 << 30,
            max_processes: 64,
            max_open_files: 100,
            ..Limits::default()
        };
        let tail = |l: &str| vec!["starting".to_owned(), l.to_owned()];
        let memory = limit_hit(1, &tail("MemoryError"), &limits).expect("memory");
        assert_eq!((memory.limit, memory.value.as_str()), ("memory", "1 GiB"));
        let forks = limit_hit(
            1,
            &tail("BlockingIOError: [Errno 11] Resource temporarily unavailable"),
            &limits,
        )
        .expect("processes");
        assert_eq!((forks.limit, forks.value.as_str()), ("processes", "64"));
        assert_eq!(
            limit_hit(1, &tail("OSError: [Errno 24] Too many open files"), &limits).map(|h| h.limit),
            Some("open files")
        );
        assert_eq!(limit_hit(1, &tail("ImportError: no module"), &limits), None);
        // A limit that is not set is never blamed.
        assert_eq!(limit_hit(1, &tail("MemoryError"), &Limits::default()), None);
        assert!(memory.to_string().contains("memory limit (1 GiB)"));
    }

    #[test]
    fn cgroups_get_the_limits_written() {
        // A plain directory stands in for cgroupfs: the files are what the
        // kernel would read.
        let parent = tempfile::tempdir().expect("ok");
        let limits = Limits {
            memory_bytes: 256 << 20,
            cpu_millis: 500,
            max_processes: 64,
            ..Limits::default()
        };
        let dir = make_cgroup(parent.path(), "proc-1", &limits).expect("ok");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("ok");
        assert_eq!(read("memory.max"), "268435456");
        assert_eq!(read("pids.max"), "64");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert!(
            make_cgroup(parent.path(), "proc-1", &limits).is_err(),
            "names are unique"
        );
    }

    #[test]
    fn cgroup_parents_outside_cgroup2_are_refused_untouched() {
        let root = tempfile::tempdir().expect("ok");
        let parent = root.path().join("reporunner");
        let err = prepare_cgroup_parent(&parent).expect_err("refused");
        assert!(err.contains("not a cgroup v2 directory"), "{err}");
        assert!(!parent.exists());
    }

    #[test]
    fn the_cgroup_join_wrapper_keeps_the_pid() {
        let dir = tempfile::tempdir().expect("ok");
        let procs = dir.path().join("cgroup.procs");
        let out = std::process::Command::new("sh")
            .args(["-c", CGROUP_JOIN])
            .arg(&procs)
            .args(["sh", "-c", "echo $$"])
            .output()
            .expect("ok");
        assert!(out.status.success());
        assert_eq!(
            std::fs::read_to_string(&procs).expect("ok"),
            String::from_utf8(out.stdout).expect("ok")
        );
    }
}

//! The one sandbox every step that runs repository code goes through:
//! install (lifecycle scripts included), build, setup commands, start and
//! tests. The runner, the dependency agent and the tester all build their
//! commands here, so that they agree on what a repository's code may see.
//!
//! A step's command line is, outside in:
//!
//! ```text
//! [sh -c 'echo $$ > CGROUP/cgroup.procs && exec "$@"']   when a cgroup v2 is usable
//! [prlimit --as=.. --nproc=.. --nofile=.. --fsize=.. --cpu=..]
//! [bwrap --ro-bind / / ... --]                            when bubblewrap works
//! [setpriv --reuid U --regid G --clear-groups ... --]     when running as root
//! PROGRAM ARGS
//! ```
//!
//! Every wrapper `exec`s the next, so the group leader is the outermost
//! program and everything shares its process group.
//!
//! What a step sees (see SECURITY.md):
//! - a read-only root; fresh /dev (with a private, writable /dev/shm), /proc
//!   and /tmp; the run's scratch dir
//!   (its `TMPDIR`) bound again at the short [`SHORT_TMPDIR`];
//! - `hidden_paths` (the data dir, the workspace root, /root, /home) under
//!   empty tmpfs; toolchains under the server's home bound back read-only;
//! - `masked_paths` (shadow files, SSH host keys, sudoers) covered;
//! - writable: only the step's workspace, environment, caches and home;
//! - run as a host uid other than 0: bubblewrap is started by root to set up
//!   the mounts, then `setpriv` drops to the owner's uid and gid with no
//!   capabilities and `no_new_privs` before the step's program runs. No user
//!   namespace maps it back to root, so root-only files stay unreadable even
//!   where a mount leaves them visible;
//! - only the environment the caller composed (see [`base_env`]).
#![forbid(unsafe_code)]

mod limits;
mod owner;
pub mod process;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

pub use limits::{LimitHit, Limits, limit_hit};
pub use owner::{Identity, grant, owned_by};
use serde::{Deserialize, Serialize};
use tokio::{process::Command, sync::OnceCell};

/// Whether steps run inside bubblewrap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Use bubblewrap when it is installed and passes its self-test; run
    /// unsandboxed otherwise (and say why).
    #[default]
    Auto,
    /// Never sandbox.
    Off,
    /// Refuse to run a step that cannot be sandboxed.
    Required,
}

/// How steps are sandboxed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    pub bwrap_binary: PathBuf,
    pub prlimit_binary: PathBuf,
    pub setpriv_binary: PathBuf,
    /// Where per-step cgroups v2 are made, when that tree is writable.
    pub cgroup_parent: Option<PathBuf>,
    /// Covered by an empty tmpfs (the data dir, the workspace root, homes).
    pub hidden_paths: Vec<PathBuf>,
    /// Files and directories covered even though the root is visible.
    pub masked_paths: Vec<PathBuf>,
    /// Directories under the server's `$HOME` bound back read-only after the
    /// home is hidden, so interpreters and toolchains installed there work.
    pub home_toolchains: Vec<PathBuf>,
    /// Run steps under the owner's uid when the server is root.
    pub unprivileged: bool,
    /// The first uid (and gid) of the owners' range, and its size.
    pub uid_base: u32,
    pub uid_count: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            mode: SandboxMode::Auto,
            bwrap_binary: PathBuf::from("bwrap"),
            prlimit_binary: PathBuf::from("prlimit"),
            setpriv_binary: PathBuf::from("setpriv"),
            cgroup_parent: None,
            hidden_paths: default_hidden_paths(),
            masked_paths: default_masked_paths(),
            home_toolchains: default_home_toolchains(),
            unprivileged: true,
            uid_base: owner::DEFAULT_UID_BASE,
            uid_count: owner::DEFAULT_UID_COUNT,
        }
    }
}

/// Homes and the server's own secrets: hidden from every step.
pub fn default_hidden_paths() -> Vec<PathBuf> {
    [
        "/root",
        "/home",
        "/var/lib/postgresql",
        "/var/lib/redis",
        "/var/lib/mysql",
        "/run/secrets",
    ]
    .map(PathBuf::from)
    .to_vec()
}

/// Root-only files programs never need: password hashes, SSH host keys,
/// sudo rules.
pub fn default_masked_paths() -> Vec<PathBuf> {
    [
        "/etc/shadow",
        "/etc/shadow-",
        "/etc/gshadow",
        "/etc/gshadow-",
        "/etc/ssh",
        "/etc/sudoers",
        "/etc/sudoers.d",
        "/etc/security/opasswd",
        "/etc/ssl/private",
    ]
    .map(PathBuf::from)
    .to_vec()
}

/// Interpreter and toolchain homes (pyenv, rustup, cargo's proxies, nvm,
/// user-local tools), relative to the server's home.
pub fn default_home_toolchains() -> Vec<PathBuf> {
    [
        ".pyenv",
        ".rustup",
        ".cargo/bin",
        ".nvm",
        ".local/bin",
        ".local/share/uv/python",
        ".volta",
        ".bun/bin",
    ]
    .map(PathBuf::from)
    .to_vec()
}

/// Where the toolchains under `home` keep their state, by the variable that
/// names it (`RUSTUP_HOME` → `~/.rustup`, `PYENV_ROOT`, `NVM_DIR`), for those
/// that exist. A step's `$HOME` is its own, so without these rustup, pyenv
/// and nvm would look in the wrong place (rustup: "no default is
/// configured").
pub fn toolchain_homes(home: &Path) -> Vec<(&'static str, PathBuf)> {
    [
        ("RUSTUP_HOME", ".rustup"),
        ("PYENV_ROOT", ".pyenv"),
        ("NVM_DIR", ".nvm"),
    ]
    .into_iter()
    .map(|(var, dir)| (var, home.join(dir)))
    .filter(|(_, path)| path.is_dir())
    .collect()
}

/// Variables of the server's own environment a step may see (when set):
/// the path, locale, time zone, and the registry, certificate and proxy
/// settings the operator configured. Nothing else of the server passes.
pub const BASE_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "PYENV_ROOT",
    "NVM_DIR",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "JAVA_HOME",
    "GOPATH",
    "GOPROXY",
    "GOFLAGS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_CERT",
    "PIP_TRUSTED_HOST",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_NATIVE_TLS",
    "npm_config_registry",
    "NPM_CONFIG_REGISTRY",
    "npm_config_cafile",
    "YARN_NPM_REGISTRY_SERVER",
    "CARGO_REGISTRIES_CRATES_IO_PROTOCOL",
];

/// Prefixes of the server's variables that never pass, whatever a list says.
const NEVER_PASS: &[&str] = &["REPORUNNER_"];

/// The part of the server's environment a step may see: `names` (normally
/// [`BASE_ENV`] plus what the operator added) that are set, minus anything
/// of Repo Runner's own configuration.
pub fn base_env<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    names
        .into_iter()
        .filter(|name| !NEVER_PASS.iter().any(|p| name.starts_with(p)))
        .filter_map(|name| Some((name.to_owned(), std::env::var(name).ok()?)))
        .collect()
}

/// One step to run.
#[derive(Clone, Debug, Default)]
pub struct Step {
    /// Names the step's cgroup; unique among live steps.
    pub name: String,
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// The whole environment of the step (nothing else is inherited).
    pub env: BTreeMap<String, String>,
    /// Bound writable (and owned by the step's identity).
    pub writable: Vec<PathBuf>,
    /// Bound back read-only where a hidden path covers them.
    pub readable: Vec<PathBuf>,
    /// Hidden for this step on top of the configured ones.
    pub hidden: Vec<PathBuf>,
    /// The step's `$HOME`: made, writable, owned by the identity.
    pub home: Option<PathBuf>,
    /// The owner whose uid the step runs as (when the server is root).
    pub owner: Option<String>,
    pub limits: Limits,
}

/// A step ready to spawn.
#[derive(Debug)]
pub struct Prepared {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// Whether bubblewrap encloses it.
    pub sandboxed: bool,
    /// The host uid and gid it runs as, when not the server's own.
    pub identity: Option<Identity>,
    /// Its cgroup, when one was made (remove it with [`remove_cgroup`]).
    pub cgroup: Option<PathBuf>,
    /// Why it is less isolated than configured, when it is.
    pub note: String,
}

impl Prepared {
    /// The command: a new process group, nothing inherited but what the
    /// step's env says, stdin closed, stdout and stderr piped.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .current_dir(&self.cwd)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command
    }
}

/// Why a step cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the sandbox is required but unavailable: {0}")]
    Unavailable(String),
    #[error("cannot prepare {path} for the step: {source}")]
    Prepare {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// The shared sandbox: checked once, then used for every step.
#[derive(Debug)]
pub struct Sandbox {
    config: SandboxConfig,
    bwrap: OnceCell<Result<PathBuf, String>>,
    cgroups: OnceCell<Result<PathBuf, String>>,
    /// Whether this process may change uid (it is root).
    root: bool,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Self {
        Self {
            config,
            bwrap: OnceCell::new(),
            cgroups: OnceCell::new(),
            root: nix::unistd::geteuid().is_root(),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Whether bubblewrap can be used (checked once, with a self-test), and
    /// why not when it cannot.
    pub async fn available(&self) -> Result<PathBuf, String> {
        if self.config.mode == SandboxMode::Off {
            return Err("the sandbox is turned off in the configuration".into());
        }
        self.bwrap
            .get_or_init(|| bwrap_self_test(self.config.bwrap_binary.clone()))
            .await
            .clone()
    }

    /// The uid and gid steps of `owner` run as, when they change uid at all.
    pub fn identity(&self, owner: &str) -> Option<Identity> {
        (self.root && self.config.unprivileged)
            .then(|| Identity::for_owner(owner, self.config.uid_base, self.config.uid_count))
    }

    async fn cgroup_parent(&self) -> Result<PathBuf, String> {
        let Some(parent) = self.config.cgroup_parent.clone() else {
            return Err("no cgroup_parent is configured".into());
        };
        self.cgroups
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || limits::prepare_cgroup_parent(&parent))
                    .await
                    .unwrap_or_else(|e| Err(format!("the cgroup check did not finish: {e}")))
            })
            .await
            .clone()
    }

    /// Builds the command line of `step`: writable paths handed to the
    /// step's identity, limits, bubblewrap and the uid drop around it.
    pub async fn prepare(&self, step: &Step) -> Result<Prepared, SandboxError> {
        let mut notes: Vec<String> = Vec::new();
        let bwrap = match self.available().await {
            Ok(bwrap) => Some(bwrap),
            Err(why) if self.config.mode == SandboxMode::Required => {
                return Err(SandboxError::Unavailable(why));
            }
            Err(why) => {
                notes.push(why);
                None
            }
        };
        // Without bubblewrap the step's paths are not bound where another uid
        // can reach them, so it keeps the server's uid (and says so).
        let identity = match (&bwrap, step.owner.as_deref()) {
            (Some(_), Some(owner)) => self.identity(owner),
            _ => None,
        };
        if let Some(home) = &step.home {
            tokio::fs::create_dir_all(home)
                .await
                .map_err(|source| SandboxError::Prepare {
                    path: home.display().to_string(),
                    source,
                })?;
        }
        if let Some(identity) = identity {
            let paths: Vec<PathBuf> = step.writable.iter().chain(step.home.iter()).cloned().collect();
            tokio::task::spawn_blocking(move || grant(identity, &paths))
                .await
                .map_err(|e| SandboxError::Prepare {
                    path: "the step's writable paths".into(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .map_err(|(path, source)| SandboxError::Prepare {
                    path: path.display().to_string(),
                    source,
                })?;
        }
        let cgroup = match self.cgroup_parent().await {
            Ok(parent) => match limits::make_cgroup(&parent, &step.name, &step.limits) {
                Ok(dir) => Some(dir),
                Err(err) => {
                    notes.push(format!("cannot create a cgroup ({err}); rlimits only"));
                    None
                }
            },
            Err(_) => None,
        };

        let mut argv: Vec<String> = Vec::new();
        if let Some(dir) = &cgroup {
            argv.extend(["sh".into(), "-c".into(), limits::CGROUP_JOIN.into()]);
            argv.push(dir.join("cgroup.procs").display().to_string());
        }
        let rlimits = limits::rlimit_args(&step.limits, cgroup.is_some());
        if !rlimits.is_empty() {
            match which(&self.config.prlimit_binary) {
                Some(prlimit) => {
                    argv.push(prlimit.display().to_string());
                    argv.extend(rlimits);
                }
                None => notes.push(format!(
                    "{} is not installed; rlimits not applied",
                    self.config.prlimit_binary.display()
                )),
            }
        }
        let mut env = step.env.clone();
        if bwrap.is_some() && scratch_dir(step).is_some() {
            // The run's scratch space, bound again at a short path.
            env.insert("TMPDIR".into(), SHORT_TMPDIR.into());
        }
        if let Some(home) = &step.home {
            env.insert("HOME".into(), home.display().to_string());
            // The server's toolchains keep their state under its own home.
            if let Some(server_home) = std::env::var_os("HOME").map(PathBuf::from) {
                for (var, path) in toolchain_homes(&server_home) {
                    env.entry(var.to_owned())
                        .or_insert_with(|| path.display().to_string());
                }
            }
        }
        if let Some(bwrap) = &bwrap {
            argv.push(bwrap.display().to_string());
            argv.extend(self.bwrap_args(step));
        }
        if let Some(identity) = identity {
            match which(&self.config.setpriv_binary) {
                Some(setpriv) => {
                    argv.push(setpriv.display().to_string());
                    argv.extend(identity.setpriv_args());
                    env.insert("USER".into(), identity.user_name());
                    env.insert("LOGNAME".into(), identity.user_name());
                }
                None if self.config.mode == SandboxMode::Required => {
                    return Err(SandboxError::Unavailable(format!(
                        "{} is not installed, so steps would run as root",
                        self.config.setpriv_binary.display()
                    )));
                }
                None => notes.push(format!(
                    "{} is not installed; the step runs as the server's uid",
                    self.config.setpriv_binary.display()
                )),
            }
        }
        argv.push(step.program.clone());
        argv.extend(step.args.iter().cloned());
        Ok(Prepared {
            argv,
            env,
            cwd: step.cwd.clone(),
            sandboxed: bwrap.is_some(),
            identity,
            cgroup,
            note: notes.join("; "),
        })
    }

    /// The bubblewrap arguments of `step`: a read-only root, fresh /dev,
    /// /proc and /tmp, the hidden paths under empty tmpfs, the masked ones
    /// covered, toolchains bound back read-only, then the step's own paths
    /// bound back. The network is shared (see SECURITY.md).
    pub fn bwrap_args(&self, step: &Step) -> Vec<String> {
        let mut args: Vec<String> = [
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            // POSIX shared memory (Python's multiprocessing, browsers)
            // needs a writable /dev/shm, which `--dev` leaves root's.
            "--perms",
            "1777",
            "--tmpfs",
            "/dev/shm",
            "--proc",
            "/proc",
            "--perms",
            "1777",
            "--tmpfs",
            "/tmp",
        ]
        .map(String::from)
        .to_vec();
        let mut hidden: Vec<&Path> = self
            .config
            .hidden_paths
            .iter()
            .chain(&step.hidden)
            .map(PathBuf::as_path)
            .collect();
        hidden.retain(|p| p.is_absolute() && p.parent().is_some() && p.is_dir());
        hidden.sort_by_key(|p| (p.components().count(), *p));
        hidden.dedup();
        for path in &hidden {
            args.extend(["--tmpfs".into(), path.display().to_string()]);
        }
        for masked in &self.config.masked_paths {
            match std::fs::symlink_metadata(masked) {
                Ok(meta) if meta.is_dir() => {
                    args.extend(["--tmpfs".into(), masked.display().to_string()]);
                }
                Ok(meta) if meta.is_file() => {
                    args.extend([
                        "--ro-bind".into(),
                        "/dev/null".into(),
                        masked.display().to_string(),
                    ]);
                }
                _ => {}
            }
        }
        // Toolchains installed under a hidden home come back read-only.
        let homes = std::env::var_os("HOME").map(PathBuf::from);
        let mut readable: Vec<PathBuf> = Vec::new();
        for home in homes.iter().filter(|h| hidden.iter().any(|p| h.starts_with(p))) {
            readable.extend(
                self.config
                    .home_toolchains
                    .iter()
                    .map(|dir| home.join(dir))
                    .filter(|p| p.is_dir()),
            );
        }
        readable.extend(step.readable.iter().filter(|p| p.exists()).cloned());
        let writable: Vec<&PathBuf> = step
            .writable
            .iter()
            .chain(step.home.iter())
            .filter(|p| p.exists())
            .collect();
        // bubblewrap makes the missing parents of a bind 0700 (root's), which
        // the step's uid could not cross: make them 0755 first.
        let mut tmpfs_roots: Vec<&Path> = hidden.clone();
        tmpfs_roots.push(Path::new("/tmp"));
        let mut parents: Vec<&Path> = readable
            .iter()
            .map(PathBuf::as_path)
            .chain(writable.iter().map(|p| p.as_path()))
            .flat_map(Path::ancestors)
            .filter(|a| tmpfs_roots.iter().any(|root| a.starts_with(root) && a != root))
            .collect();
        parents.sort_by_key(|p| (p.components().count(), *p));
        parents.dedup();
        for parent in parents {
            args.extend([
                "--perms".into(),
                "0755".into(),
                "--dir".into(),
                parent.display().to_string(),
            ]);
        }
        for path in &readable {
            let path = path.display().to_string();
            args.extend(["--ro-bind".into(), path.clone(), path]);
        }
        for path in writable {
            let path = path.display().to_string();
            args.extend(["--bind".into(), path.clone(), path]);
        }
        if let Some(scratch) = scratch_dir(step) {
            args.extend([
                "--bind".into(),
                scratch.display().to_string(),
                SHORT_TMPDIR.into(),
            ]);
        }
        args.extend(["--chdir".into(), step.cwd.display().to_string()]);
        args.extend(
            [
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--die-with-parent",
                "--",
            ]
            .map(String::from),
        );
        args
    }
}

/// Where a sandboxed step finds its `TMPDIR`: the run's scratch dir bound
/// again at a short path, so that what tools make under it stays short
/// (an AF_UNIX socket's path must fit in 108 bytes; pytest's `tmp_path` of
/// a long test name under a deep data dir does not).
pub const SHORT_TMPDIR: &str = "/tmp/run";

/// The step's `TMPDIR` when it is one of its writable dirs (the run's
/// scratch space), outside [`SHORT_TMPDIR`].
fn scratch_dir(step: &Step) -> Option<&Path> {
    let tmp = Path::new(step.env.get("TMPDIR")?);
    (tmp.is_absolute()
        && !tmp.starts_with(SHORT_TMPDIR)
        && step.writable.iter().any(|w| w == tmp)
        && tmp.is_dir())
    .then_some(tmp)
}

/// Kills everything in a step's cgroup and removes it.
pub async fn remove_cgroup(dir: &Path) {
    limits::remove_cgroup(dir).await;
}

/// Kills a step's cgroup at once (no wait), for drop paths.
pub fn kill_cgroup(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
}

/// Finds `program` on `PATH` (or checks it, when it names a path).
fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    reporunner_host::which(program.to_str()?, &std::env::var_os("PATH")?)
}

async fn bwrap_self_test(binary: PathBuf) -> Result<PathBuf, String> {
    let Some(path) = which(&binary) else {
        return Err(format!(
            "bubblewrap ({}) is not installed; running without a sandbox",
            binary.display()
        ));
    };
    let mut command = Command::new(&path);
    command
        .args([
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
        ])
        .args([
            "--unshare-pid",
            "--unshare-ipc",
            "--die-with-parent",
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(10), command.output()).await {
        Ok(Ok(output)) if output.status.success() => Ok(path),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first: String = stderr
                .lines()
                .next()
                .unwrap_or("no message")
                .chars()
                .take(200)
                .collect();
            Err(format!(
                "bubblewrap failed its self-test ({first}); running without a sandbox"
            ))
        }
        Ok(Err(err)) => Err(format!(
            "bubblewrap cannot be run ({err}); running without a sandbox"
        )),
        Err(_) => Err("bubblewrap's self-test did not finish in 10 s; running without a sandbox".into()),
    }
}

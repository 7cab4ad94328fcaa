//! Host processes: one process group each, rlimits through `prlimit`, a
//! per-process cgroup v2 where one can be made, and bubblewrap where it works.
//!
//! The command line of a process is, outside in:
//!
//! ```text
//! [sh -c 'echo $$ > CGROUP/cgroup.procs && exec "$@"']   when a cgroup is used
//! [prlimit --data=.. --nofile=.. --nproc=.. --cpu=..]     when a limit is set
//! [bwrap --ro-bind / / ... --]                            when sandboxed
//! sh -c COMMAND
//! ```
//!
//! Every wrapper `exec`s the next, so the group leader is the outermost
//! program and everything shares its process group.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use tokio::{process::Command, sync::OnceCell};

use super::{
    BackendProcess, Isolation, LaunchSpec, Limits, OutputStream, ProcessBackend, Spawned, StopSignal,
};
use crate::{
    config::{RunnerConfig, SandboxMode},
    error::{Result, RunnerError},
};

/// Runs processes on this host.
#[derive(Debug)]
pub struct LocalBackend {
    config: Arc<RunnerConfig>,
    /// `Ok(path)` of a working bwrap, or why there is none.
    bwrap: OnceCell<Result<PathBuf, String>>,
    /// `Ok(parent)` of usable cgroups, or why there are none.
    cgroups: OnceCell<Result<PathBuf, String>>,
}

impl LocalBackend {
    pub fn new(config: Arc<RunnerConfig>) -> Self {
        Self {
            config,
            bwrap: OnceCell::new(),
            cgroups: OnceCell::new(),
        }
    }

    /// Whether bubblewrap can be used (checked once, with a self-test), and
    /// why not when it cannot.
    pub async fn sandbox_available(&self) -> Result<PathBuf, String> {
        if self.config.sandbox == SandboxMode::Off {
            return Err("the sandbox is turned off in the runner configuration".into());
        }
        self.bwrap
            .get_or_init(|| bwrap_self_test(self.config.bwrap_binary.clone()))
            .await
            .clone()
    }

    async fn cgroup_parent(&self) -> Result<PathBuf, String> {
        let Some(parent) = self.config.cgroup_parent.clone() else {
            return Err("no cgroup_parent is configured".into());
        };
        self.cgroups
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || prepare_cgroup_parent(&parent))
                    .await
                    .unwrap_or_else(|e| Err(format!("the cgroup check did not finish: {e}")))
            })
            .await
            .clone()
    }
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
            let first = stderr
                .lines()
                .next()
                .unwrap_or("no message")
                .chars()
                .take(200)
                .collect::<String>();
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

/// Checks that `parent` is (or can be made) a cgroup v2 directory with the
/// memory, cpu and pids controllers enabled for its children.
fn prepare_cgroup_parent(parent: &Path) -> Result<PathBuf, String> {
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

/// Put before every command: on SIGTERM the `sh -c` shell lets its current
/// foreground command finish (that command got SIGTERM too) and then exits,
/// instead of dying at once. In the sandbox that matters: when the shell
/// ends, the pid namespace ends, and everything in it is killed. A caught
/// signal is reset for the programs the shell starts, so they see SIGTERM as
/// usual.
const SHELL_PRELUDE: &str = "trap 'exit 143' TERM; ";

/// Moves the shell into the cgroup whose `cgroup.procs` is `$0`, then
/// becomes the rest of the command line (same pid, same group).
const CGROUP_JOIN: &str = r#"echo $$ > "$0" && exec "$@""#;

/// Makes `<parent>/<name>` with the limits written into it.
fn make_cgroup(parent: &Path, name: &str, limits: &Limits) -> std::io::Result<PathBuf> {
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
async fn remove_cgroup(dir: &Path) {
    let _ = tokio::fs::write(dir.join("cgroup.kill"), "1").await;
    for _ in 0..20 {
        if tokio::fs::remove_dir(dir).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(cgroup = %dir.display(), "cannot remove a process cgroup");
}

/// The `prlimit` options for `limits` (`--nproc` only when no cgroup bounds
/// the processes: RLIMIT_NPROC counts every process of the user).
fn rlimit_args(limits: &Limits, pids_in_cgroup: bool) -> Vec<String> {
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
    if limits.cpu_millis > 0 && limits.max_runtime_seconds > 0 {
        // The CPU time the process could use at its share for its whole run.
        let seconds = (u64::from(limits.max_runtime_seconds) * u64::from(limits.cpu_millis)).div_ceil(1000);
        args.push(format!("--cpu={}", seconds.max(1)));
    }
    args
}

/// The bubblewrap arguments for `spec`: a read-only root, fresh /dev,
/// /proc and /tmp, the hidden paths under empty tmpfs, then the workspace
/// and the run's tmp dir bound back writable. The network is shared.
pub(crate) fn bwrap_args(spec: &LaunchSpec, config: &RunnerConfig) -> Vec<String> {
    let mut args: Vec<String> = [
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
    ]
    .map(String::from)
    .to_vec();
    let mut hidden: Vec<&Path> = config.hidden_paths.iter().map(PathBuf::as_path).collect();
    hidden.extend([config.log_dir.as_path(), config.tmp_dir.as_path()]);
    if let Some(parent) = spec.workspace.parent()
        && parent.parent().is_some()
    {
        hidden.push(parent);
    }
    hidden.retain(|p| p.is_absolute() && p.parent().is_some() && p.is_dir());
    hidden.sort_by_key(|p| (p.components().count(), *p));
    hidden.dedup();
    for path in hidden {
        let path = path.display().to_string();
        args.extend(["--tmpfs".into(), path]);
    }
    let extra = config.writable_paths.iter().filter(|p| p.exists());
    let env_dirs = install_env_dirs(spec, config);
    for writable in [&spec.workspace, &spec.tmp_dir]
        .into_iter()
        .chain(extra)
        .chain(env_dirs.writable.iter())
    {
        let path = writable.display().to_string();
        args.extend(["--bind".into(), path.clone(), path]);
    }
    for readable in &env_dirs.readable {
        let path = readable.display().to_string();
        args.extend(["--ro-bind".into(), path.clone(), path]);
    }
    // A writable home of the run's own: apps write dotfiles (~/.pm2, ~/.cache,
    // ~/.config) and the real home is read-only. Toolchain homes keep pointing
    // at the real ones, read-only, so rustup, cargo and pyenv still find them.
    if let Some(real_home) = spec.env.get("HOME").filter(|h| h.starts_with('/')) {
        let real_home = Path::new(real_home);
        for (var, dir) in [
            ("RUSTUP_HOME", ".rustup"),
            ("CARGO_HOME", ".cargo"),
            ("PYENV_ROOT", ".pyenv"),
            ("NVM_DIR", ".nvm"),
        ] {
            let path = real_home.join(dir);
            if !spec.env.contains_key(var) && path.is_dir() {
                args.extend(["--setenv".into(), var.into(), path.display().to_string()]);
            }
        }
    }
    args.extend([
        "--setenv".into(),
        "HOME".into(),
        sandbox_home(spec).display().to_string(),
    ]);
    args.extend(["--chdir".into(), spec.working_dir.display().to_string()]);
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

/// The home directory of a sandboxed process: inside its run's tmp dir.
pub(crate) fn sandbox_home(spec: &LaunchSpec) -> PathBuf {
    spec.tmp_dir.join("home")
}

/// Variables naming the environment an install made for the process, bound
/// writable into the sandbox when they lie in a hidden path (the dependency
/// agent keeps venvs and target dirs under the data dir).
pub(crate) const ENV_DIR_VARS: [&str; 2] = ["VIRTUAL_ENV", "CARGO_TARGET_DIR"];

/// Install-produced directories a sandboxed process needs back.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct EnvDirs {
    /// `VIRTUAL_ENV`, `CARGO_TARGET_DIR`: the process's own environment.
    pub writable: Vec<PathBuf>,
    /// Tool directories on `PATH` (e.g. a package manager the dependency
    /// agent installed), read-only.
    pub readable: Vec<PathBuf>,
}

/// The directories of `spec.env` that a hidden path would otherwise cover,
/// by their canonical paths (a link cannot lead elsewhere):
/// - `VIRTUAL_ENV` and `CARGO_TARGET_DIR` strictly inside
///   `<install_env_dir>/<run_id>`: this run's own environment, writable;
/// - the roots of `PATH` entries (`<root>/bin`, `<root>/node_modules/.bin`)
///   strictly inside `install_tools_dir` or this run's environment dir,
///   read-only.
///
/// Only existing directories under a hidden path count; anything else in
/// the request's env (another run's venv, another owner's workspace) is not
/// bound.
pub(crate) fn install_env_dirs(spec: &LaunchSpec, config: &RunnerConfig) -> EnvDirs {
    let canonical = |path: &Path| path.canonicalize().ok().filter(|p| p.is_dir());
    let hidden: Vec<PathBuf> = config
        .hidden_paths
        .iter()
        .chain([&config.log_dir, &config.tmp_dir])
        .filter_map(|p| canonical(p))
        .collect();
    let strictly_inside = |path: &Path, root: &Option<PathBuf>| {
        root.as_ref()
            .is_some_and(|root| path.starts_with(root) && path != root)
    };
    let own_envs = canonical(&config.install_env_dir.join(&spec.run_id));
    let tools = canonical(&config.install_tools_dir);
    let covered = |path: &Path| {
        hidden.iter().any(|h| path.starts_with(h) && path != h) && !hidden.iter().any(|h| h.starts_with(path))
    };
    let mut dirs = EnvDirs::default();
    for name in ENV_DIR_VARS {
        let Some(path) = spec.env.get(name).and_then(|v| canonical(Path::new(v))) else {
            continue;
        };
        if strictly_inside(&path, &own_envs) && covered(&path) && !dirs.writable.contains(&path) {
            dirs.writable.push(path);
        }
    }
    if let Some(path_var) = spec.env.get("PATH") {
        for entry in path_var.split(':').map(Path::new) {
            let root = if entry.ends_with("node_modules/.bin") {
                entry.parent().and_then(Path::parent)
            } else if entry.ends_with("bin") {
                entry.parent()
            } else {
                Some(entry)
            };
            let Some(root) = root.and_then(canonical) else {
                continue;
            };
            // The workspace and the run's tmp dir are bound writable already; a
            // read-only bind of (a part of) them on top would make them read-only.
            let inside_writable = root.starts_with(&spec.workspace)
                || root.starts_with(&spec.tmp_dir)
                || spec.workspace.starts_with(&root);
            if (strictly_inside(&root, &tools) || strictly_inside(&root, &own_envs))
                && !inside_writable
                && covered(&root)
                && !dirs.writable.iter().any(|w| root.starts_with(w))
                && !dirs.readable.contains(&root)
            {
                dirs.readable.push(root);
            }
        }
    }
    dirs
}

impl ProcessBackend for LocalBackend {
    type Process = LocalProcess;

    async fn spawn(&self, spec: &LaunchSpec) -> Result<Spawned<LocalProcess>> {
        let mut notes: Vec<String> = Vec::new();
        let sandbox = match self.sandbox_available().await {
            Ok(bwrap) => Some(bwrap),
            Err(why) if self.config.sandbox == SandboxMode::Required => {
                return Err(RunnerError::SandboxUnavailable(why));
            }
            Err(why) => {
                notes.push(why);
                None
            }
        };
        let cgroup = match self.cgroup_parent().await {
            Ok(parent) => match make_cgroup(&parent, &spec.process_id, &spec.limits) {
                Ok(dir) => Some(dir),
                Err(err) => {
                    notes.push(format!("cannot create a cgroup ({err}); rlimits only"));
                    None
                }
            },
            Err(why) => {
                notes.push(why);
                None
            }
        };

        let mut argv: Vec<String> = Vec::new();
        if let Some(dir) = &cgroup {
            argv.extend(["sh".into(), "-c".into(), CGROUP_JOIN.into()]);
            argv.push(dir.join("cgroup.procs").display().to_string());
        }
        let rlimits = rlimit_args(&spec.limits, cgroup.is_some());
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
        if let Some(bwrap) = &sandbox {
            argv.push(bwrap.display().to_string());
            argv.extend(bwrap_args(spec, &self.config));
        }
        argv.extend([
            "sh".into(),
            "-c".into(),
            format!("{SHELL_PRELUDE}{}", spec.command),
        ]);

        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(&spec.working_dir)
            .env_clear()
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let spawned = command.spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(source) => {
                if let Some(dir) = &cgroup {
                    remove_cgroup(dir).await;
                }
                return Err(RunnerError::Spawn {
                    program: argv[0].clone(),
                    source,
                });
            }
        };
        let pid = child.id().unwrap_or_default();
        let stdout = child.stdout.take().map(|s| OutputStream(Box::new(s)));
        let stderr = child.stderr.take().map(|s| OutputStream(Box::new(s)));
        let mut note = String::new();
        for (i, part) in notes.iter().enumerate() {
            let _ = write!(note, "{}{part}", if i > 0 { "; " } else { "" });
        }
        Ok(Spawned {
            process: LocalProcess {
                child,
                pgid: i32::try_from(pid).unwrap_or_default(),
                sandboxed: sandbox.is_some(),
                cgroup,
                done: false,
            },
            pid,
            address: None,
            stdout,
            stderr,
            isolation: Isolation {
                sandboxed: sandbox.is_some(),
                note,
            },
        })
    }
}

/// A process group on this host.
#[derive(Debug)]
pub struct LocalProcess {
    child: tokio::process::Child,
    pgid: i32,
    sandboxed: bool,
    cgroup: Option<PathBuf>,
    done: bool,
}

/// The live (not zombie) members of process group `pgid`, from `/proc`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    members_with_parents(pgid)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// `(pid, parent pid)` of the live members of process group `pgid`.
fn members_with_parents(pgid: i32) -> Vec<(i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid pgrp ...; comm may contain spaces.
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let parent = fields.next()?.parse::<i32>().ok()?;
            let group = fields.next()?.parse::<i32>().ok()?;
            (group == pgid && state != "Z" && state != "X").then_some((pid, parent))
        })
        .collect()
}

impl LocalProcess {
    fn kill_group(&self) {
        if self.pgid > 0 {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
        if let Some(dir) = &self.cgroup {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        }
    }
}

impl BackendProcess for LocalProcess {
    async fn wait(&mut self) -> Result<i32> {
        use std::os::unix::process::ExitStatusExt;
        let status = self
            .child
            .wait()
            .await
            .map_err(|source| RunnerError::io("wait for", "a child process", source))?;
        Ok(status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1))
    }

    fn signal(&self, signal: StopSignal) {
        if self.pgid <= 0 {
            return;
        }
        match signal {
            StopSignal::Kill => self.kill_group(),
            // bwrap (the leader) ends on SIGTERM, and its pid-1 child (the
            // namespace's init) takes the namespace down with it, so only
            // the processes inside get SIGTERM.
            StopSignal::Terminate if self.sandboxed => {
                for (pid, parent) in members_with_parents(self.pgid) {
                    if pid != self.pgid && parent != self.pgid {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                    }
                }
            }
            StopSignal::Terminate => {
                let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGTERM);
            }
        }
    }

    fn group_alive(&self) -> bool {
        self.pgid > 0 && !group_members(self.pgid).is_empty()
    }

    async fn cleanup(&mut self) {
        // Killed processes take a moment to go (a pid namespace's init
        // first waits for its children); wait for that, bounded.
        for _ in 0..100 {
            self.kill_group();
            if !self.group_alive() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(dir) = self.cgroup.take() {
            remove_cgroup(&dir).await;
        }
        self.done = true;
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        if !self.done {
            self.kill_group();
            if let Some(dir) = &self.cgroup {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            process_id: "p1".into(),
            run_id: "r1".into(),
            component: "api".into(),
            command: "true".into(),
            workspace: "/nonexistent-ws-root/alice/ws1".into(),
            working_dir: "/nonexistent-ws-root/alice/ws1/api".into(),
            env: BTreeMap::new(),
            limits: Limits::default(),
            tmp_dir: "/nonexistent-tmp/r1".into(),
        }
    }

    #[test]
    fn rlimits_map_to_prlimit_options() {
        let limits = Limits {
            memory_bytes: 1 << 20,
            cpu_millis: 500,
            max_processes: 10,
            max_open_files: 64,
            max_runtime_seconds: 9,
        };
        assert_eq!(
            rlimit_args(&limits, false),
            ["--data=1048576", "--nofile=64", "--nproc=10", "--cpu=5"]
        );
        assert_eq!(
            rlimit_args(&limits, true),
            ["--data=1048576", "--nofile=64", "--cpu=5"]
        );
        assert!(rlimit_args(&Limits::default(), false).is_empty());
    }

    #[test]
    fn the_sandbox_binds_the_workspace_after_hiding_its_parent() {
        let config = RunnerConfig::default().resolve(Path::new("/srv/data"));
        let args = bwrap_args(&spec(), &config).join(" ");
        assert!(
            args.starts_with("--ro-bind / / --dev /dev --proc /proc --tmpfs /tmp"),
            "{args}"
        );
        assert!(args.contains("--bind /nonexistent-ws-root/alice/ws1 /nonexistent-ws-root/alice/ws1"));
        assert!(args.contains("--chdir /nonexistent-ws-root/alice/ws1/api"));
        assert!(args.contains("--die-with-parent"));
        assert!(!args.contains("--unshare-net") && !args.contains("--unshare-all"));
        assert!(args.ends_with("--"));
        assert!(
            !args.contains("/srv/data"),
            "hidden paths that do not exist are skipped: {args}"
        );

        // Existing hidden paths come first, shallow before deep; the
        // workspace, tmp and extra writable paths are bound after them.
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        for dir in ["data/runner/logs", "data/runner/tmp/r1", "ws/alice/one", "cache"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let config = RunnerConfig {
            writable_paths: vec![root.join("cache"), root.join("missing")],
            ..RunnerConfig::default().resolve(&root.join("data"))
        };
        let spec = LaunchSpec {
            workspace: root.join("ws/alice/one"),
            working_dir: root.join("ws/alice/one"),
            tmp_dir: root.join("data/runner/tmp/r1"),
            ..spec()
        };
        let args = bwrap_args(&spec, &config);
        let at = |what: &str, path: &str| {
            let path = root.join(path).display().to_string();
            args.windows(2)
                .position(|w| w[0] == what && w[1] == path)
                .unwrap_or_else(|| panic!("{what} {path} missing in {args:?}"))
        };
        let data = at("--tmpfs", "data");
        let logs = at("--tmpfs", "data/runner/logs");
        let parent = at("--tmpfs", "ws/alice");
        let ws = at("--bind", "ws/alice/one");
        let tmp = at("--bind", "data/runner/tmp/r1");
        let cache = at("--bind", "cache");
        assert!(
            data < logs && logs.max(parent) < ws && ws < tmp && tmp < cache,
            "{args:?}"
        );
        assert!(!args.iter().any(|a| a.ends_with("missing")));
    }

    #[test]
    fn install_environments_in_hidden_paths_are_bound_back() {
        let tmp = tempfile::tempdir().unwrap();
        let root = &tmp.path().canonicalize().unwrap();
        for dir in [
            "data/dependency/envs/r1/api/.venv/bin",
            "data/dependency/tools/pnpm@9/node_modules/.bin",
            "elsewhere/bin",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let config = RunnerConfig::default().resolve(&root.join("data"));
        let venv = root.join("data/dependency/envs/r1/api/.venv");
        let tools = root.join("data/dependency/tools/pnpm@9");
        let path = format!(
            "{}:{}:{}:/usr/bin",
            venv.join("bin").display(),
            tools.join("node_modules/.bin").display(),
            root.join("elsewhere/bin").display()
        );
        let mut spec = spec();
        spec.env.insert("VIRTUAL_ENV".into(), venv.display().to_string());
        spec.env.insert("PATH".into(), path);
        // The data dir itself is never handed out.
        spec.env
            .insert("CARGO_TARGET_DIR".into(), root.join("data").display().to_string());
        let dirs = install_env_dirs(&spec, &config);
        assert_eq!(dirs.writable, vec![venv.clone()]);
        assert_eq!(dirs.readable, vec![tools.clone()]);

        // Nor another run's environment, nor a link out of this run's.
        std::fs::create_dir_all(root.join("data/dependency/envs/r2/api/.venv")).unwrap();
        std::fs::create_dir_all(root.join("data/secret")).unwrap();
        std::os::unix::fs::symlink(
            root.join("data/secret"),
            root.join("data/dependency/envs/r1/api/escape"),
        )
        .unwrap();
        for sneaky in [
            "data/dependency/envs/r2/api/.venv",
            "data/dependency/envs/r1/api/escape",
        ] {
            let mut other = spec.clone();
            other
                .env
                .insert("VIRTUAL_ENV".into(), root.join(sneaky).display().to_string());
            other.env.insert(
                "PATH".into(),
                format!("{}:/usr/bin", root.join(sneaky).join("bin").display()),
            );
            let dirs = install_env_dirs(&other, &config);
            assert!(
                dirs.writable.is_empty() && dirs.readable.is_empty(),
                "{sneaky}: {dirs:?}"
            );
        }
        let args = bwrap_args(&spec, &config);
        let position = |what: &str, path: &Path| {
            let path = path.display().to_string();
            args.windows(3)
                .position(|w| w[0] == what && w[1] == path && w[2] == path)
                .unwrap_or_else(|| panic!("{what} {path} missing in {args:?}"))
        };
        let data = args
            .windows(2)
            .position(|w| w[0] == "--tmpfs" && w[1] == root.join("data").display().to_string())
            .unwrap();
        assert!(data < position("--bind", &venv));
        assert!(data < position("--ro-bind", &tools));
    }

    #[test]
    fn a_workspace_under_a_hidden_path_stays_writable_and_home_is_the_runs_own() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let workspace = root.join("data/workspaces/alice/ws1");
        let real_home = root.join("home");
        for dir in [
            workspace.join("node_modules/.bin"),
            real_home.join(".cargo"),
            real_home.join(".rustup"),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let mut config = RunnerConfig::default().resolve(&root.join("data"));
        config.hidden_paths.push(root.join("data/workspaces"));
        let mut spec = spec();
        spec.workspace = workspace.clone();
        spec.working_dir = workspace.clone();
        spec.env.insert(
            "PATH".into(),
            format!("{}:/usr/bin", workspace.join("node_modules/.bin").display()),
        );
        spec.env.insert("HOME".into(), real_home.display().to_string());
        let dirs = install_env_dirs(&spec, &config);
        assert!(
            dirs.readable.is_empty(),
            "node_modules/.bin lies in the writable workspace: {dirs:?}"
        );
        let args = bwrap_args(&spec, &config);
        let ws = workspace.display().to_string();
        assert!(
            !args.windows(2).any(|w| w[0] == "--ro-bind" && w[1] == ws),
            "{args:?}"
        );
        let setenv = |var: &str| {
            args.windows(3)
                .find(|w| w[0] == "--setenv" && w[1] == var)
                .map(|w| w[2].clone())
        };
        assert_eq!(setenv("HOME"), Some(sandbox_home(&spec).display().to_string()));
        assert_eq!(
            setenv("CARGO_HOME"),
            Some(real_home.join(".cargo").display().to_string())
        );
        assert_eq!(
            setenv("RUSTUP_HOME"),
            Some(real_home.join(".rustup").display().to_string())
        );
        assert_eq!(setenv("PYENV_ROOT"), None, "only toolchain homes that exist");
    }

    #[test]
    fn cgroups_get_the_limits_written() {
        // A plain directory stands in for cgroupfs: the files are what the
        // kernel would read.
        let parent = tempfile::tempdir().unwrap();
        let limits = Limits {
            memory_bytes: 256 << 20,
            cpu_millis: 500,
            max_processes: 64,
            ..Limits::default()
        };
        let dir = make_cgroup(parent.path(), "proc-1", &limits).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
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
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join("reporunner");
        let err = prepare_cgroup_parent(&parent).unwrap_err();
        assert!(err.contains("not a cgroup v2 directory"), "{err}");
        assert!(!parent.exists());
    }

    #[test]
    fn the_cgroup_join_wrapper_keeps_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let procs = dir.path().join("cgroup.procs");
        let out = std::process::Command::new("sh")
            .args(["-c", CGROUP_JOIN])
            .arg(&procs)
            .args(["sh", "-c", "echo $$"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            std::fs::read_to_string(&procs).unwrap(),
            String::from_utf8(out.stdout).unwrap()
        );
    }

    #[test]
    fn this_process_is_a_member_of_its_group() {
        let me = i32::try_from(std::process::id()).unwrap();
        let group = nix::unistd::getpgrp().as_raw();
        assert!(group_members(group).contains(&me));
    }
}

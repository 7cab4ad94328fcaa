//! Host processes: one process group each, in the shared sandbox
//! (`reporunner-sandbox`: bubblewrap, a per-owner uid, rlimits or a cgroup
//! v2). This file decides what a supervised process needs of the sandbox:
//! its workspace, its run's tmp dir and home, the environment an install
//! made for it.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use reporunner_sandbox::{Sandbox, SandboxConfig, SandboxError, Step};

use super::{BackendProcess, Isolation, LaunchSpec, OutputStream, ProcessBackend, Spawned, StopSignal};
use crate::{
    config::RunnerConfig,
    error::{Result, RunnerError},
};

/// Runs processes on this host.
#[derive(Debug)]
pub struct LocalBackend {
    config: Arc<RunnerConfig>,
    sandbox: Sandbox,
}

impl LocalBackend {
    pub fn new(config: Arc<RunnerConfig>) -> Self {
        let sandbox = Sandbox::new(config.sandbox_config());
        Self { config, sandbox }
    }

    /// Whether bubblewrap can be used (checked once, with a self-test), and
    /// why not when it cannot.
    pub async fn sandbox_available(&self) -> Result<PathBuf, String> {
        self.sandbox.available().await
    }
}

impl RunnerConfig {
    /// The shared sandbox's settings for this runner's processes.
    pub fn sandbox_config(&self) -> SandboxConfig {
        let mut hidden_paths = reporunner_sandbox::default_hidden_paths();
        hidden_paths.extend(self.hidden_paths.iter().cloned());
        hidden_paths.extend([self.log_dir.clone(), self.tmp_dir.clone()]);
        SandboxConfig {
            mode: self.sandbox,
            bwrap_binary: self.bwrap_binary.clone(),
            prlimit_binary: self.prlimit_binary.clone(),
            setpriv_binary: self.setpriv_binary.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
            hidden_paths,
            unprivileged: self.unprivileged,
            ..SandboxConfig::default()
        }
    }
}

/// Put before every command: on SIGTERM the `sh -c` shell lets its current
/// foreground command finish (that command got SIGTERM too) and then exits,
/// instead of dying at once. In the sandbox that matters: when the shell
/// ends, the pid namespace ends, and everything in it is killed. A caught
/// signal is reset for the programs the shell starts, so they see SIGTERM as
/// usual.
const SHELL_PRELUDE: &str = "trap 'exit 143' TERM; ";

/// The sandbox step of `spec`: the workspace, the run's tmp dir, the
/// configured extra paths and the install's environment writable; the
/// install's tools read-only; the workspace's parent (other workspaces of
/// the owner) hidden; a home of the run's own.
pub(crate) fn step_of(spec: &LaunchSpec, config: &RunnerConfig) -> Step {
    let env_dirs = install_env_dirs(spec, config);
    let mut writable = vec![spec.workspace.clone(), spec.tmp_dir.clone()];
    writable.extend(config.writable_paths.iter().filter(|p| p.exists()).cloned());
    writable.extend(env_dirs.writable);
    let mut hidden = Vec::new();
    if let Some(parent) = spec.workspace.parent()
        && parent.parent().is_some()
    {
        hidden.push(parent.to_path_buf());
    }
    let mut env = spec.env.clone();
    // Toolchain homes keep pointing at the real ones (bound back read-only),
    // so rustup and pyenv still find them; cargo gets a writable home of the
    // run's own (its registry cache is written).
    if let Some(real_home) = spec.env.get("HOME").filter(|h| h.starts_with('/')) {
        for (var, path) in reporunner_sandbox::toolchain_homes(Path::new(real_home)) {
            env.entry(var.to_owned())
                .or_insert_with(|| path.display().to_string());
        }
    }
    // A cargo home the process cannot write (the server's own) is replaced
    // by one in the run's home.
    let cargo_home_writable = env
        .get("CARGO_HOME")
        .is_some_and(|home| writable.iter().any(|w| Path::new(home).starts_with(w)));
    if !cargo_home_writable {
        env.insert(
            "CARGO_HOME".into(),
            sandbox_home(spec).join(".cargo").display().to_string(),
        );
    }
    Step {
        name: spec.process_id.clone(),
        program: "sh".into(),
        args: vec!["-c".into(), format!("{SHELL_PRELUDE}{}", spec.command)],
        cwd: spec.working_dir.clone(),
        env,
        writable,
        readable: env_dirs.readable,
        hidden,
        home: Some(sandbox_home(spec)),
        owner: spec.owner.clone(),
        limits: spec.limits,
    }
}

/// The home directory of a sandboxed process: inside its run's tmp dir.
pub(crate) fn sandbox_home(spec: &LaunchSpec) -> PathBuf {
    spec.tmp_dir.join("home")
}

/// Variables naming the environment an install made for the process, bound
/// writable into the sandbox when they lie in a hidden path (the dependency
/// agent keeps venvs and target dirs under the data dir).
pub(crate) const ENV_DIR_VARS: [&str; 3] = ["VIRTUAL_ENV", "CARGO_TARGET_DIR", "CARGO_HOME"];

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
    // The owner's own caches (a cargo home) are theirs to write too.
    let own_caches = match (&config.owner_caches, &spec.owner) {
        (Some(root), Some(owner)) => canonical(&root.join(owner)),
        _ => None,
    };
    let tools = canonical(&config.install_tools_dir);
    let covered = |path: &Path| {
        hidden.iter().any(|h| path.starts_with(h) && path != h) && !hidden.iter().any(|h| h.starts_with(path))
    };
    let mut dirs = EnvDirs::default();
    for name in ENV_DIR_VARS {
        let Some(path) = spec.env.get(name).and_then(|v| canonical(Path::new(v))) else {
            continue;
        };
        let own = strictly_inside(&path, &own_envs) || strictly_inside(&path, &own_caches);
        if own && covered(&path) && !dirs.writable.contains(&path) {
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
        let step = step_of(spec, &self.config);
        let prepared = self.sandbox.prepare(&step).await.map_err(|e| match e {
            SandboxError::Unavailable(why) => RunnerError::SandboxUnavailable(why),
            SandboxError::Prepare { path, source } => RunnerError::io("prepare", Path::new(&path), source),
        })?;
        let mut command = prepared.command();
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(source) => {
                if let Some(dir) = &prepared.cgroup {
                    reporunner_sandbox::remove_cgroup(dir).await;
                }
                return Err(RunnerError::Spawn {
                    program: prepared.argv[0].clone(),
                    source,
                });
            }
        };
        let pid = child.id().unwrap_or_default();
        let stdout = child.stdout.take().map(|s| OutputStream(Box::new(s)));
        let stderr = child.stderr.take().map(|s| OutputStream(Box::new(s)));
        Ok(Spawned {
            process: LocalProcess {
                child,
                pgid: i32::try_from(pid).unwrap_or_default(),
                sandboxed: prepared.sandboxed,
                cgroup: prepared.cgroup,
                done: false,
            },
            pid,
            address: None,
            stdout,
            stderr,
            isolation: Isolation {
                sandboxed: prepared.sandboxed,
                note: prepared.note,
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
            reporunner_sandbox::kill_cgroup(dir);
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
            reporunner_sandbox::remove_cgroup(&dir).await;
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
    use crate::backend::Limits;

    fn bwrap_args(spec: &LaunchSpec, config: &RunnerConfig) -> Vec<String> {
        Sandbox::new(config.sandbox_config()).bwrap_args(&step_of(spec, config))
    }

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
            owner: None,
        }
    }

    #[test]
    fn the_sandbox_binds_the_workspace_after_hiding_its_parent() {
        let config = RunnerConfig::default().resolve(Path::new("/srv/data"));
        let args = bwrap_args(&spec(), &config).join(" ");
        assert!(
            args.starts_with("--ro-bind / / --dev /dev --proc /proc --perms 1777 --tmpfs /tmp"),
            "{args}"
        );
        // Paths that do not exist are not bound (bubblewrap would fail); the
        // bind order is checked with real directories below.
        assert!(!args.contains("--bind /nonexistent-ws-root"));
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
        let step = step_of(&spec, &config);
        let setenv = |var: &str| step.env.get(var).cloned();
        assert_eq!(step.home, Some(sandbox_home(&spec)));
        assert_eq!(
            setenv("CARGO_HOME"),
            Some(sandbox_home(&spec).join(".cargo").display().to_string()),
            "cargo writes its registry cache: a home of the run's own"
        );
        assert_eq!(
            setenv("RUSTUP_HOME"),
            Some(real_home.join(".rustup").display().to_string())
        );
        assert_eq!(setenv("PYENV_ROOT"), None, "only toolchain homes that exist");
    }

    #[test]
    fn this_process_is_a_member_of_its_group() {
        let me = i32::try_from(std::process::id()).unwrap();
        let group = nix::unistd::getpgrp().as_raw();
        assert!(group_members(group).contains(&me));
    }
}

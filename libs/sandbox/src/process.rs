//! A repository's shell command as a sandboxed process group on this host:
//! the runner's supervised apps and the tester's test runs, started the same
//! way so that they get the same guarantees (the owner's uid, a scrubbed
//! environment, limits, the owner's caches and nothing else writable).
//!
//! - [`ProcessSettings`]: the paths, binaries and defaults the sandbox of
//!   such a process takes (the runner's `[runner]` settings carry them);
//! - [`LaunchSpec`] → [`step_of`]: what the process may see and write, and
//!   [`environment`]: the variables it gets;
//! - [`spawn`] → [`LocalProcess`]: the started group, its signals, its
//!   cleanup (and a kill of what is left when it is dropped).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use tokio::process::{Child, ChildStderr, ChildStdout};

use crate::{Limits, Sandbox, SandboxConfig, SandboxError, SandboxMode, Step};

/// The settings the sandbox of a process takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSettings {
    /// Where process logs go (hidden from every process).
    pub log_dir: PathBuf,
    /// Per-run scratch space (`<tmp_dir>/<run_id>`, the run's `TMPDIR` and
    /// home, writable; the rest of it hidden).
    pub tmp_dir: PathBuf,
    /// Paths hidden from processes besides the sandbox's defaults.
    pub hidden_paths: Vec<PathBuf>,
    /// Extra paths bound writable when they exist.
    pub writable_paths: Vec<PathBuf>,
    /// The dependency agent's per-run environments (`<dir>/<run_id>/…`).
    pub install_env_dir: PathBuf,
    /// The dependency agent's package-manager tools.
    pub install_tools_dir: PathBuf,
    /// Where workspaces may lie; empty: anywhere.
    pub workspace_roots: Vec<PathBuf>,
    /// The dependency agent's per-owner caches (`<cache_dir>/owners`).
    pub owner_caches: Option<PathBuf>,
    /// Variables of the service passed on to processes (when set).
    pub pass_env: Vec<String>,
    /// Limits where a request leaves a field at 0.
    pub default_limits: Limits,
    pub sandbox: SandboxMode,
    pub bwrap_binary: PathBuf,
    pub prlimit_binary: PathBuf,
    pub setpriv_binary: PathBuf,
    /// Run processes under their owner's own uid when the server is root.
    pub unprivileged: bool,
    /// Where per-process cgroups v2 are made.
    pub cgroup_parent: Option<PathBuf>,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        Self {
            log_dir: PathBuf::from("runner/logs"),
            tmp_dir: PathBuf::from("runner/tmp"),
            hidden_paths: Vec::new(),
            writable_paths: Vec::new(),
            install_env_dir: PathBuf::from("dependency/envs"),
            install_tools_dir: PathBuf::from("dependency/tools"),
            workspace_roots: Vec::new(),
            owner_caches: None,
            pass_env: [
                "PATH",
                "HOME",
                "LANG",
                "LC_ALL",
                "TZ",
                "USER",
                "LOGNAME",
                "PYENV_ROOT",
                "NVM_DIR",
                "JAVA_HOME",
                "GOPATH",
                "CARGO_HOME",
                "RUSTUP_HOME",
            ]
            .map(String::from)
            .to_vec(),
            default_limits: Limits {
                max_open_files: 4096,
                ..Limits::default()
            },
            // A service refuses to run repositories unsandboxed unless the
            // operator says so (`auto` or `off`).
            sandbox: SandboxMode::Required,
            bwrap_binary: PathBuf::from("bwrap"),
            prlimit_binary: PathBuf::from("prlimit"),
            setpriv_binary: PathBuf::from("setpriv"),
            unprivileged: true,
            cgroup_parent: Some(PathBuf::from("/sys/fs/cgroup/reporunner-runner")),
        }
    }
}

impl ProcessSettings {
    /// Resolves relative `log_dir`, `tmp_dir`, install dirs and
    /// `hidden_paths` against the service's data directory, and hides the
    /// data directory itself.
    #[must_use]
    pub fn resolve(mut self, data_dir: &Path) -> Self {
        for path in [
            &mut self.log_dir,
            &mut self.tmp_dir,
            &mut self.install_env_dir,
            &mut self.install_tools_dir,
        ] {
            if path.is_relative() {
                *path = data_dir.join(&*path);
            }
        }
        for path in &mut self.hidden_paths {
            if path.is_relative() {
                *path = data_dir.join(&*path);
            }
        }
        if data_dir.is_absolute() && !self.hidden_paths.iter().any(|p| p == data_dir) {
            self.hidden_paths.push(data_dir.to_path_buf());
        }
        self
    }

    /// Checks what the types cannot; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        for (name, path) in [
            ("log_dir", &self.log_dir),
            ("tmp_dir", &self.tmp_dir),
            ("install_env_dir", &self.install_env_dir),
            ("install_tools_dir", &self.install_tools_dir),
        ] {
            if !path.is_absolute() {
                return Err(format!(
                    "{name} `{}` must be absolute (resolve it against the data directory first)",
                    path.display()
                ));
            }
        }
        for (name, paths) in [
            ("hidden_paths", &self.hidden_paths),
            ("writable_paths", &self.writable_paths),
        ] {
            if let Some(bad) = paths.iter().find(|p| !p.is_absolute() || p.parent().is_none()) {
                return Err(format!(
                    "{name} entry `{}` must be an absolute path other than /",
                    bad.display()
                ));
            }
        }
        if let Some(parent) = &self.cgroup_parent
            && !parent.is_absolute()
        {
            return Err(format!("cgroup_parent `{}` must be absolute", parent.display()));
        }
        Ok(())
    }

    /// Refuses a (canonical) workspace outside `workspace_roots`.
    pub fn check_workspace(&self, workspace: &Path) -> Result<(), String> {
        if self.workspace_roots.is_empty() {
            return Ok(());
        }
        let inside = self.workspace_roots.iter().any(|root| {
            let root = root.canonicalize().unwrap_or_else(|_| root.clone());
            workspace.starts_with(&root) && workspace != root
        });
        if inside {
            Ok(())
        } else {
            Err(format!(
                "workspace_path {} is not a workspace of this host",
                workspace.display()
            ))
        }
    }

    /// The shared sandbox's settings for these processes.
    pub fn sandbox_config(&self) -> SandboxConfig {
        let mut hidden_paths = crate::default_hidden_paths();
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

/// Everything needed to start one process.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    pub process_id: String,
    pub run_id: String,
    pub component: String,
    /// The final shell command line, run with `sh -c`.
    pub command: String,
    /// The workspace root (the only writable tree besides `tmp_dir`).
    pub workspace: PathBuf,
    /// Where the command runs, inside `workspace`.
    pub working_dir: PathBuf,
    /// The complete environment.
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    /// Per-run scratch space, writable.
    pub tmp_dir: PathBuf,
    /// Whose sandbox uid the process runs as.
    pub owner: Option<String>,
}

/// Checks that a run id or component name can be one path segment.
pub fn check_segment(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {value:?} must be 1 to 128 characters of letters, digits, '-', '_' and '.' (not . or ..)"
        ))
    }
}

/// Checks that an environment variable name is usable.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("environment variable name {name:?} is not valid"))
    }
}

/// The environment of a process, lowest precedence first: the service's
/// passed-on variables, the plan's defaults, the request, then what the
/// agent sets itself (`PORT`, `HOST`, `TMPDIR`, `CI`).
pub fn environment(
    passed: impl IntoIterator<Item = (String, String)>,
    plan_defaults: impl IntoIterator<Item = (String, String)>,
    request: &BTreeMap<String, String>,
    own: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, String> {
    let mut env: BTreeMap<String, String> = passed.into_iter().collect();
    for (name, value) in plan_defaults {
        check_env_name(&name)?;
        env.insert(name, value);
    }
    for (name, value) in request {
        check_env_name(name)?;
        if value.contains('\0') {
            return Err(format!("environment variable {name} contains a NUL byte"));
        }
        env.insert(name.clone(), value.clone());
    }
    env.entry("PYTHONUNBUFFERED".into()).or_insert_with(|| "1".into());
    env.extend(own);
    Ok(env)
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
pub fn step_of(spec: &LaunchSpec, settings: &ProcessSettings) -> Step {
    let env_dirs = install_env_dirs(spec, settings);
    let mut writable = vec![spec.workspace.clone(), spec.tmp_dir.clone()];
    writable.extend(settings.writable_paths.iter().filter(|p| p.exists()).cloned());
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
        for (var, path) in crate::toolchain_homes(Path::new(real_home)) {
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
pub fn sandbox_home(spec: &LaunchSpec) -> PathBuf {
    spec.tmp_dir.join("home")
}

/// Variables naming the environment an install made for the process, bound
/// writable into the sandbox when they lie in a hidden path (the dependency
/// agent keeps venvs and target dirs under the data dir).
pub const ENV_DIR_VARS: [&str; 3] = ["VIRTUAL_ENV", "CARGO_TARGET_DIR", "CARGO_HOME"];

/// Install-produced directories a sandboxed process needs back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnvDirs {
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
pub fn install_env_dirs(spec: &LaunchSpec, settings: &ProcessSettings) -> EnvDirs {
    let canonical = |path: &Path| path.canonicalize().ok().filter(|p| p.is_dir());
    let hidden: Vec<PathBuf> = settings
        .hidden_paths
        .iter()
        .chain([&settings.log_dir, &settings.tmp_dir])
        .filter_map(|p| canonical(p))
        .collect();
    let strictly_inside = |path: &Path, root: &Option<PathBuf>| {
        root.as_ref()
            .is_some_and(|root| path.starts_with(root) && path != root)
    };
    let own_envs = canonical(&settings.install_env_dir.join(&spec.run_id));
    // The owner's own caches (a cargo home) are theirs to write too.
    let own_caches = match (&settings.owner_caches, &spec.owner) {
        (Some(root), Some(owner)) => canonical(&root.join(owner)),
        _ => None,
    };
    let tools = canonical(&settings.install_tools_dir);
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

/// How to ask a process group to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// Please end (SIGTERM).
    Terminate,
    /// End now (SIGKILL).
    Kill,
}

/// A started process group and its output.
#[derive(Debug)]
pub struct Spawned {
    pub process: LocalProcess,
    /// The group leader's pid (the group's id).
    pub pid: u32,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    /// Whether it runs in bubblewrap.
    pub sandboxed: bool,
    /// What is missing (sandbox, cgroup limits), in words; empty when
    /// nothing is.
    pub note: String,
}

/// Starts `spec` in `sandbox` (whose settings came from `settings`): one
/// process group, stdin closed, stdout and stderr piped. Fails with
/// [`SandboxError::Unavailable`] when the sandbox is required and cannot be
/// used.
pub async fn spawn(
    sandbox: &Sandbox,
    settings: &ProcessSettings,
    spec: &LaunchSpec,
) -> Result<Spawned, SandboxError> {
    let step = step_of(spec, settings);
    let prepared = sandbox.prepare(&step).await?;
    let mut command = prepared.command();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(source) => {
            if let Some(dir) = &prepared.cgroup {
                crate::remove_cgroup(dir).await;
            }
            return Err(SandboxError::Spawn {
                program: prepared.argv[0].clone(),
                source,
            });
        }
    };
    let pid = child.id().unwrap_or_default();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    Ok(Spawned {
        process: LocalProcess {
            child,
            pgid: i32::try_from(pid).unwrap_or_default(),
            sandboxed: prepared.sandboxed,
            cgroup: prepared.cgroup,
            done: false,
        },
        pid,
        stdout,
        stderr,
        sandboxed: prepared.sandboxed,
        note: prepared.note,
    })
}

/// A process group on this host. Dropping it kills whatever is left of it.
#[derive(Debug)]
pub struct LocalProcess {
    child: Child,
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
            crate::kill_cgroup(dir);
        }
    }

    /// Waits for the main process to end: its exit code, or 128 + the
    /// signal that ended it.
    pub async fn wait_exit(&mut self) -> std::io::Result<i32> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().await?;
        Ok(status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1))
    }

    /// Signals every process of the group. Not an error when they are gone.
    pub fn signal(&self, signal: StopSignal) {
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

    /// Whether anything of the group is still running.
    pub fn group_alive(&self) -> bool {
        self.pgid > 0 && !group_members(self.pgid).is_empty()
    }

    /// After the main process ended: ends what is left of the group and
    /// removes its cgroup.
    pub async fn cleanup(&mut self) {
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
            crate::remove_cgroup(&dir).await;
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
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bwrap_args(spec: &LaunchSpec, config: &ProcessSettings) -> Vec<String> {
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
    fn settings_resolve_against_the_data_dir_and_name_what_is_wrong() {
        let settings = ProcessSettings::default().resolve(Path::new("/srv/data"));
        settings.validate().unwrap();
        assert_eq!(settings.tmp_dir, PathBuf::from("/srv/data/runner/tmp"));
        assert!(settings.hidden_paths.contains(&PathBuf::from("/srv/data")));
        let err = ProcessSettings::default().validate().unwrap_err();
        assert!(err.contains("log_dir"), "{err}");
        let err = ProcessSettings {
            writable_paths: vec![PathBuf::from("/")],
            ..settings.clone()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("writable_paths"), "{err}");

        let roots = ProcessSettings {
            workspace_roots: vec![PathBuf::from("/srv/ws")],
            ..settings
        };
        roots.check_workspace(Path::new("/srv/ws/alice/one")).unwrap();
        assert!(roots.check_workspace(Path::new("/srv/ws")).is_err());
        assert!(roots.check_workspace(Path::new("/etc")).is_err());
    }

    #[test]
    fn segments_and_environments_are_checked() {
        check_segment("run_id", "run-1.a_b").unwrap();
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(check_segment("run_id", bad).is_err(), "{bad:?}");
        }
        let request = BTreeMap::from([("APP".to_owned(), "request".to_owned())]);
        let env = environment(
            [("PATH".to_owned(), "/bin".to_owned())],
            [("APP".to_owned(), "default".to_owned())],
            &request,
            [("TMPDIR".to_owned(), "/t".to_owned())],
        )
        .unwrap();
        assert_eq!(env["APP"], "request");
        assert_eq!(env["PYTHONUNBUFFERED"], "1");
        assert_eq!(env["TMPDIR"], "/t");
        let bad = BTreeMap::from([("1BAD".to_owned(), String::new())]);
        assert!(environment([], [], &bad, []).is_err());
        let nul = BTreeMap::from([("OK".to_owned(), "a\0b".to_owned())]);
        assert!(environment([], [], &nul, []).unwrap_err().contains("NUL"));
    }

    #[test]
    fn the_sandbox_binds_the_workspace_after_hiding_its_parent() {
        let config = ProcessSettings::default().resolve(Path::new("/srv/data"));
        let args = bwrap_args(&spec(), &config).join(" ");
        assert!(
            args.starts_with("--ro-bind / / --dev /dev --perms 1777 --tmpfs /dev/shm --proc /proc --perms 1777 --tmpfs /tmp"),
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
        let config = ProcessSettings {
            writable_paths: vec![root.join("cache"), root.join("missing")],
            ..ProcessSettings::default().resolve(&root.join("data"))
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
        let config = ProcessSettings::default().resolve(&root.join("data"));
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
        let mut config = ProcessSettings::default().resolve(&root.join("data"));
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

//! Node installs with npm, pnpm, yarn or bun, as the component's
//! `package_manager`, `package.json`'s `packageManager` or the lockfile says.
//!
//! A manager that is missing (or of another major than `packageManager`
//! pins) is installed from the npm registry into the tools dir
//! (`npm install --prefix <tools>/pnpm@9 pnpm@9`); corepack is never asked
//! to download anything. `npm ci` runs only when package-lock.json matches
//! package.json; pnpm's `--frozen-lockfile` only when pnpm-lock.yaml is
//! current, falling back to an unfrozen install when it fails.
//!
//! `node_modules` is made in the component's directory, where Node looks for
//! it; it is what counts against the disk limit. The result's `env` has
//! `PATH` with `node_modules/.bin` and the manager's directory first, and
//! the settings that stop pnpm and corepack from switching versions.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

use crate::{
    Failure, Job, Report, Step,
    exec::{self, Cmd, LogSink},
};

const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Packages an app cannot run without that download binaries of their own,
/// from a host that is not the npm registry, when they install or generate
/// code: the package, the host, and the variable that names a mirror.
const BINARY_HOSTS: &[(&str, &str, &str)] = &[
    ("prisma", "binaries.prisma.sh", "PRISMA_ENGINES_MIRROR"),
    ("@prisma/client", "binaries.prisma.sh", "PRISMA_ENGINES_MIRROR"),
];

/// How long a binary host gets to answer.
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether `host` accepts a connection on 443 within [`REACH_TIMEOUT`].
async fn can_reach(host: &'static str) -> Result<(), String> {
    match tokio::time::timeout(REACH_TIMEOUT, tokio::net::TcpStream::connect((host, 443))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", REACH_TIMEOUT.as_secs())),
    }
}

/// Why the app cannot be installed: a package of [`BINARY_HOSTS`] it
/// depends on, whose host `reach` cannot reach, with no mirror configured.
async fn unreachable_binary_host<F, Fut>(package: &Value, reach: F) -> Option<String>
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let (name, host, mirror) = BINARY_HOSTS.iter().find(|(name, _, mirror)| {
        std::env::var_os(mirror).is_none()
            && SECTIONS.iter().any(|section| {
                package
                    .pointer(&format!("/{section}/{}", name.replace('/', "~1")))
                    .is_some()
            })
    })?;
    let why = reach(host).await.err()?;
    Some(format!(
        "{name} downloads its engines from {host} (not the npm registry) when it installs and generates its \
         client, and this host cannot reach it ({why}); set {mirror} to a mirror it can reach"
    ))
}

/// A Node package manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Npm,
    Pnpm,
    /// Yarn 1.
    YarnClassic,
    /// Yarn 2 and later.
    YarnBerry,
    Bun,
}

impl Manager {
    fn binary(self) -> &'static str {
        match self {
            Self::Npm => "npm",
            Self::Pnpm => "pnpm",
            Self::YarnClassic | Self::YarnBerry => "yarn",
            Self::Bun => "bun",
        }
    }

    /// The npm package that provides it.
    fn package(self) -> &'static str {
        match self {
            Self::Npm => "npm",
            Self::Pnpm => "pnpm",
            Self::YarnClassic => "yarn",
            Self::YarnBerry => "@yarnpkg/cli-dist",
            Self::Bun => "bun",
        }
    }
}

/// Picks the manager and the version to install when it is missing.
pub fn choose_manager(package_manager: &str, package: &Value, dir: &Path) -> (Manager, String) {
    let field = package
        .get("packageManager")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (field_name, field_version) = field.split_once('@').unwrap_or((field, ""));
    let field_version = field_version.split('+').next().unwrap_or("").to_owned();
    let yarn_berry = || {
        std::fs::read_to_string(dir.join("yarn.lock")).is_ok_and(|l| l.contains("__metadata:"))
            || field_name == "yarn" && !field_version.starts_with('1')
            || dir.join(".yarnrc.yml").is_file()
    };
    let name = if matches!(field_name, "npm" | "pnpm" | "yarn" | "bun") {
        field_name
    } else if matches!(package_manager, "npm" | "pnpm" | "yarn" | "bun") {
        package_manager
    } else if dir.join("pnpm-lock.yaml").is_file() {
        "pnpm"
    } else if dir.join("yarn.lock").is_file() {
        "yarn"
    } else if dir.join("bun.lockb").is_file() || dir.join("bun.lock").is_file() {
        "bun"
    } else {
        "npm"
    };
    let manager = match name {
        "pnpm" => Manager::Pnpm,
        "yarn" if yarn_berry() => Manager::YarnBerry,
        "yarn" => Manager::YarnClassic,
        "bun" => Manager::Bun,
        _ => Manager::Npm,
    };
    let version = if field_name == name && !field_version.is_empty() {
        field_version
    } else {
        match manager {
            Manager::Pnpm => pnpm_major_for_lock(dir).to_owned(),
            Manager::YarnClassic => "1".into(),
            Manager::YarnBerry => "4".into(),
            Manager::Npm | Manager::Bun => "latest".into(),
        }
    };
    (manager, version)
}

/// The pnpm major that writes the lockfile in `dir` (9 without one).
fn pnpm_major_for_lock(dir: &Path) -> &'static str {
    let lock = std::fs::read_to_string(dir.join("pnpm-lock.yaml")).unwrap_or_default();
    let version = lock
        .lines()
        .find_map(|l| l.strip_prefix("lockfileVersion:"))
        .map(|v| v.trim().trim_matches(['\'', '"']).to_owned())
        .unwrap_or_default();
    if version.starts_with("6.") {
        "8"
    } else if version.starts_with("5.") {
        "7"
    } else {
        "9"
    }
}

const SECTIONS: [&str; 3] = ["dependencies", "devDependencies", "optionalDependencies"];

fn spec_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether package-lock.json (v2 or later) records exactly package.json's
/// dependency specifiers, so that `npm ci` can work.
pub fn npm_lock_matches(package: &Value, lock: &Value) -> bool {
    let Some(root) = lock.get("packages").and_then(|p| p.get("")) else {
        return false;
    };
    SECTIONS
        .iter()
        .all(|section| spec_map(package.get(section)) == spec_map(root.get(section)))
}

/// Whether pnpm-lock.yaml records package.json's specifiers for the root
/// project (lockfile v6 and v9 layouts).
pub fn pnpm_lock_current(package: &Value, lock: &serde_json::Value) -> bool {
    let root = lock.get("importers").and_then(|i| i.get(".")).unwrap_or(lock);
    SECTIONS.iter().all(|section| {
        let locked: BTreeMap<String, String> = root
            .get(section)
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| {
                        v.get("specifier")
                            .and_then(Value::as_str)
                            .map(|s| (k.clone(), s.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        locked == spec_map(package.get(section))
    })
}

/// A manager ready to run: the program, leading arguments and "pnpm 9.1.0".
#[derive(Clone, Debug)]
struct Ready {
    program: PathBuf,
    prefix: Vec<String>,
    tool: String,
    /// A directory to put first on PATH (the tools install's `.bin`).
    bin_dir: Option<PathBuf>,
}

async fn version_of(program: &Path, prefix: &[String], env: &BTreeMap<String, String>) -> Option<String> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(prefix)
        .arg("--version")
        .current_dir("/")
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let output = tokio::time::timeout(PROBE_TIMEOUT, command.output())
        .await
        .ok()?
        .ok()?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !version.is_empty() && version.len() < 64).then_some(version)
}

/// How the host's Node stands against `engines.node`.
#[derive(Debug, PartialEq, Eq)]
enum EnginesFit {
    /// Satisfies it, or the range or version cannot be read (no verdict).
    Fits,
    /// Older than every version the range allows.
    TooOld,
    /// Newer than every version it allows (an old app's range): a notice.
    TooNew,
}

fn engines_fit(engines: &str, host: &str) -> EnginesFit {
    use nodejs_semver::{OutsideDirection, Range, Version};
    let (Ok(range), Ok(version)) = (
        Range::parse(engines.trim()),
        Version::parse(host.trim().trim_start_matches('v')),
    ) else {
        return EnginesFit::Fits;
    };
    if range.satisfies(&version) {
        EnginesFit::Fits
    } else if range.outside(&version, OutsideDirection::Lower, false) == Ok(true) {
        EnginesFit::TooOld
    } else if range.outside(&version, OutsideDirection::Higher, false) == Ok(true) {
        EnginesFit::TooNew
    } else {
        EnginesFit::Fits
    }
}

/// An env of only `PATH`, for probing a program on the host's PATH.
fn path_only(path: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("PATH".to_owned(), path.to_owned())])
}

fn major_matches(version: &str, wanted: &str) -> bool {
    wanted == "latest" || version.split('.').next() == wanted.split('.').next()
}

/// The manager from PATH, the repository's yarnPath, or the tools dir
/// (installed there from the npm registry when missing).
async fn ensure_manager(
    job: &Job,
    sink: &mut LogSink,
    report: &Report,
    manager: Manager,
    wanted: &str,
    env: &BTreeMap<String, String>,
) -> Step<Ready> {
    let name = manager.binary();
    if manager == Manager::YarnBerry
        && let Some(yarn_path) = yarn_path(&job.dir)
    {
        let node = exec::which("node", &job.base_path).unwrap_or_else(|| PathBuf::from("node"));
        let prefix = vec![yarn_path.display().to_string()];
        if let Some(version) = version_of(&node, &prefix, env).await {
            return Ok(Ready {
                program: node,
                prefix,
                tool: format!("yarn {version}"),
                bin_dir: None,
            });
        }
    }
    if let Some(path) = exec::which(name, &job.base_path)
        && let Some(version) = version_of(&path, &[], env).await
        && (manager == Manager::Npm || major_matches(&version, wanted))
    {
        return Ok(Ready {
            program: path,
            prefix: Vec::new(),
            tool: format!("{name} {version}"),
            bin_dir: None,
        });
    }
    let home = job.config.tools_dir.join(format!("{name}@{wanted}"));
    let bin_dir = home.join("node_modules/.bin");
    let binary = bin_dir.join(name);
    let ready = |version: String| Ready {
        program: binary.clone(),
        prefix: Vec::new(),
        tool: format!("{name} {version}"),
        bin_dir: Some(bin_dir.clone()),
    };
    if let Some(version) = version_of(&binary, &[], env).await {
        return Ok(ready(version));
    }
    let _lock = job.tool_lock.lock().await;
    // Other processes share the tools dir (agents of other nodes, parallel
    // test processes).
    let _file_lock = exec::tools_lock(&job.config.tools_dir, name)
        .await
        .map_err(|e| Failure::new(format!("the tools dir cannot be locked: {e}")))?;
    if let Some(version) = version_of(&binary, &[], env).await {
        return Ok(ready(version));
    }
    let npm = exec::which("npm", &job.base_path).ok_or_else(|| {
        Failure::new(format!(
            "{name} is not installed and there is no npm to install it with"
        ))
    })?;
    sink.system(
        "install",
        format!(
            "{name} {wanted} is not installed; installing {}@{wanted} from the npm registry",
            manager.package()
        ),
    )
    .await;
    let staging = job
        .config
        .tools_dir
        .join(format!(".{name}-{}", std::process::id()));
    let _ = tokio::fs::remove_dir_all(&staging).await;
    tokio::fs::create_dir_all(&staging)
        .await
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", staging.display())))?;
    let cmd = Cmd::new(npm, &staging, "install")
        .args(["install".as_ref(), "--prefix".as_ref(), staging.as_os_str()])
        .arg(format!("{}@{wanted}", manager.package()))
        .args(["--no-audit", "--no-fund", "--no-package-lock"])
        .envs(env)
        .tool();
    if let Err(failure) = job.step(sink, report, &cmd).await {
        let _ = tokio::fs::remove_dir_all(&staging).await;
        return Err(failure);
    }
    // Another agent process may have finished first: keep a working copy,
    // replace a broken one.
    if tokio::fs::symlink_metadata(&home).await.is_ok() && version_of(&binary, &[], env).await.is_none() {
        let _ = tokio::fs::remove_dir_all(&home).await;
    }
    if let Err(e) = tokio::fs::rename(&staging, &home).await {
        let _ = tokio::fs::remove_dir_all(&staging).await;
        if version_of(&binary, &[], env).await.is_none() {
            return Err(Failure::new(format!(
                "cannot move {name} into the tools dir: {e}"
            )));
        }
    }
    let version = version_of(&binary, &[], env).await.ok_or_else(|| {
        Failure::new(format!(
            "{name} was installed from npm but `{name} --version` fails"
        ))
    })?;
    Ok(ready(version))
}

/// `yarnPath` of `.yarnrc.yml`, when the file it names exists.
fn yarn_path(dir: &Path) -> Option<PathBuf> {
    let rc = std::fs::read_to_string(dir.join(".yarnrc.yml")).ok()?;
    let value = rc.lines().find_map(|l| l.trim().strip_prefix("yarnPath:"))?;
    let path = dir.join(value.trim().trim_matches(['\'', '"']));
    path.is_file().then_some(path)
}

/// Installs the component's Node dependencies.
pub(crate) async fn install(job: &Job, sink: &mut LogSink, report: &mut Report) -> Step {
    let manifest = job.dir.join("package.json");
    let text = tokio::fs::read_to_string(&manifest)
        .await
        .map_err(|_| Failure::new(format!("no package.json in {}", job.dir.display())))?;
    let package: Value =
        serde_json::from_str(&text).map_err(|e| Failure::new(format!("cannot parse package.json: {e}")))?;
    let (manager, wanted) = choose_manager(&job.component.package_manager, &package, &job.dir);
    if let Some(engines) = package.pointer("/engines/node").and_then(Value::as_str)
        && let Some(host) = version_of(Path::new("node"), &[], &path_only(&job.base_path)).await
    {
        match engines_fit(engines, &host) {
            EnginesFit::TooOld => {
                // Refused before anything is installed: Node is never
                // downloaded, and code written for a newer one fails later
                // with a less clear error.
                return Err(Failure::new(format!(
                    "package.json engines.node is {engines}, and this host's Node is {host}, older than any version \
                     it allows (Node is never downloaded; install a Node that satisfies it)"
                )));
            }
            EnginesFit::TooNew => {
                sink.system(
                    "install",
                    format!(
                        "package.json engines.node is {engines}; this host's Node {host} is newer than it allows; \
                         trying it anyway"
                    ),
                )
                .await;
            }
            EnginesFit::Fits => {}
        }
    }
    if let Some(refusal) = unreachable_binary_host(&package, can_reach).await {
        // Refused before a minute of installing: the app cannot come up
        // without what that host serves.
        return Err(Failure::new(refusal));
    }

    let node_modules = job.dir.join("node_modules");
    report.environment_path.clone_from(&node_modules);
    report.disk_paths = vec![node_modules.clone()];
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in [
        ("npm_config_cache", job.cache("npm").display().to_string()),
        (
            "npm_config_store_dir",
            job.cache("pnpm-store").display().to_string(),
        ),
        ("YARN_CACHE_FOLDER", job.cache("yarn").display().to_string()),
        ("BUN_INSTALL_CACHE_DIR", job.cache("bun").display().to_string()),
        ("npm_config_manage_package_manager_versions", "false".to_owned()),
        ("npm_config_confirm_modules_purge", "false".to_owned()),
        ("npm_config_audit", "false".to_owned()),
        ("npm_config_fund", "false".to_owned()),
        ("npm_config_update_notifier", "false".to_owned()),
        ("COREPACK_ENABLE_STRICT", "0".to_owned()),
        ("COREPACK_ENABLE_DOWNLOAD_PROMPT", "0".to_owned()),
        ("YARN_ENABLE_IMMUTABLE_INSTALLS", "false".to_owned()),
    ] {
        env.insert(key.to_owned(), value);
    }
    // node-gyp builds addons with Python; it looks in places (pyenv shims,
    // `python2`) that may not answer here: the host's python3 instead.
    if let Some(python) = std::env::split_paths(&job.base_path)
        .filter(|dir| !dir.ends_with("shims"))
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
    {
        env.insert("npm_config_python".into(), python.display().to_string());
    }
    let ready = ensure_manager(job, sink, report, manager, &wanted, &env).await?;
    report.tool.clone_from(&ready.tool);
    let mut path = format!("{}:", node_modules.join(".bin").display());
    if let Some(bin) = &ready.bin_dir {
        path.push_str(&format!("{}:", bin.display()));
    }
    path.push_str(&job.base_path);
    env.insert("PATH".into(), path);
    for key in [
        "PATH",
        "npm_config_manage_package_manager_versions",
        "COREPACK_ENABLE_STRICT",
        "COREPACK_ENABLE_DOWNLOAD_PROMPT",
    ] {
        if let Some(value) = env.get(key) {
            report.env.insert(key.to_owned(), value.clone());
        }
    }

    let dir = job.dir.clone();
    let run = |args: &[&str]| {
        Cmd::new(&ready.program, &dir, "install")
            .args(ready.prefix.iter().map(String::as_str))
            .args(args.iter().copied())
            .envs(&env)
    };
    let installed = install_with(job, sink, report, manager, &package, &run).await;
    if let Err(failure) = installed {
        let failed = if failure.fatal {
            None
        } else {
            failed_lifecycle_script(&sink.tail())
        };
        let Some(failed) = failed else {
            return Err(failure);
        };
        match drop_in_for(&failed, &package) {
            Some((drop_in, patched)) => {
                // An addon that cannot be built on this Node: its
                // maintained drop-in under the same name, so `require` and
                // the loaders that look it up by name still find it.
                sink.system(
                    "install",
                    format!(
                        "{failed} cannot be built on this host's Node (its install script failed); using its \
                         maintained drop-in {drop_in} under the name {failed} (package.json: \"{failed}\": \"{}\")",
                        alias(drop_in)
                    ),
                )
                .await;
                // package.json is edited by `npm pkg set` in the sandbox, as
                // the owner: the install scripts that just ran may have made
                // it (or its directory) a link to a host file, which the agent
                // itself must never write through.
                let npm = exec::which("npm", &job.base_path)
                    .ok_or_else(|| Failure::new("`npm` is not on this host's PATH"))?;
                for section in declared_sections(&failed, &package) {
                    let set = format!("{section}.{failed}={}", alias(drop_in));
                    let cmd = Cmd::new(&npm, &job.dir, "install")
                        .args(["pkg", "set", set.as_str()])
                        .envs(&env);
                    job.step(sink, report, &cmd).await?;
                }
                install_with(job, sink, report, manager, &patched, &run).await?;
            }
            None => without_scripts(job, sink, report, manager, &package, &failed, &run).await?,
        }
    }
    // Later commands see the caches too; the result's env keeps what the
    // runner needs.
    let mut full = report.env.clone();
    full.extend(env);
    let scratch = Report {
        env: full,
        disk_paths: report.disk_paths.clone(),
        ..Report::default()
    };
    job.custom_install(sink, &scratch).await?;
    job.build(sink, &scratch, None).await
}

/// Native addons that no longer build on current Node, and their
/// maintained drop-ins (same API, pure JavaScript).
const DROP_INS: &[(&str, &str)] = &[("node-sass", "sass")];

/// The npm alias that installs `drop_in` under another name.
fn alias(drop_in: &str) -> String {
    format!("npm:{drop_in}@^1")
}

/// The dependency sections of package.json that declare `name`.
fn declared_sections(name: &str, package: &Value) -> Vec<&'static str> {
    ["dependencies", "devDependencies", "optionalDependencies"]
        .into_iter()
        .filter(|section| package.get(*section).and_then(|s| s.get(name)).is_some())
        .collect()
}

/// When `failed` has a drop-in and package.json declares it itself: the
/// drop-in and package.json with `failed` aliased to it.
fn drop_in_for(failed: &str, package: &Value) -> Option<(&'static str, Value)> {
    let (_, drop_in) = DROP_INS.iter().find(|(name, _)| *name == failed)?;
    let mut patched = package.clone();
    let mut declared = false;
    for section in ["dependencies", "devDependencies", "optionalDependencies"] {
        if let Some(spec) = patched.get_mut(section).and_then(|s| s.get_mut(failed)) {
            *spec = Value::String(alias(drop_in));
            declared = true;
        }
    }
    declared.then_some((*drop_in, patched))
}

/// The dependency whose install script failed the install, from the
/// manager's output: npm's `npm error path …/node_modules/<name>` (then
/// `command failed`), Yarn 1's `error …/node_modules/<name>: Command
/// failed.`, pnpm's `…/node_modules/<name> <script>: Failed` or `…: Running
/// <script> script, failed`, node-gyp's `gyp ERR! cwd …/node_modules/<name>`
/// (whose long output pushes npm's own lines out of the tail).
fn failed_lifecycle_script(tail: &[String]) -> Option<String> {
    static PATTERN: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(concat!(
            r"(?:npm (?:ERR!|error) path |^error )\S*node_modules/((?:@[\w.-]+/)?[\w.-]+)(?::? Command failed|$)",
            r"|node_modules/((?:@[\w.-]+/)?[\w.-]+)(?: (?:pre|post)?install: Failed|: Running (?:pre|post)?install script, failed)",
            r"|gyp ERR! cwd \S*node_modules/((?:@[\w.-]+/)?[\w.-]+)$",
        ))
        .ok()
    });
    let re = PATTERN.as_ref()?;
    let npm_failed = tail
        .iter()
        .any(|l| l.contains("command failed") || l.contains("Command failed"));
    tail.iter().rev().find_map(|line| {
        let caps = re.captures(line.trim())?;
        match (caps.get(1), caps.get(2).or_else(|| caps.get(3))) {
            (Some(name), _) if npm_failed => Some(name.as_str().to_owned()),
            (_, Some(name)) => Some(name.as_str().to_owned()),
            _ => None,
        }
    })
}

/// Installs again with lifecycle scripts off, because `failed`'s script
/// failed (typically a download of a prebuilt binary from a host this
/// network cannot reach), then runs the scripts of every other dependency
/// (`npm rebuild`, `pnpm rebuild`) and the project's own install scripts,
/// so only `failed` goes without. Says so in the log.
async fn without_scripts(
    job: &Job,
    sink: &mut LogSink,
    report: &mut Report,
    manager: Manager,
    package: &Value,
    failed: &str,
    run: &(dyn Fn(&[&str]) -> Cmd + Sync),
) -> Step {
    let args: &[&str] = match manager {
        Manager::Npm | Manager::Bun => &["install", "--ignore-scripts"],
        Manager::Pnpm => &["install", "--no-frozen-lockfile", "--ignore-scripts"],
        Manager::YarnClassic => &[
            "install",
            "--non-interactive",
            "--no-progress",
            "--ignore-scripts",
        ],
        Manager::YarnBerry => &["install", "--mode=skip-build"],
    };
    sink.system(
        "install",
        format!(
            "the install script of the dependency {failed} failed (often a download from a host this network \
             cannot reach); installing again with lifecycle scripts off, then running every other package's"
        ),
    )
    .await;
    job.step(sink, report, &run(args)).await?;
    let others = packages_with_install_scripts(&job.dir.join("node_modules"), failed);
    if !others.is_empty() && matches!(manager, Manager::Npm | Manager::Pnpm) {
        for chunk in others.chunks(50) {
            let mut rebuild = vec!["rebuild"];
            rebuild.extend(chunk.iter().map(String::as_str));
            job.step(sink, report, &run(&rebuild)).await?;
        }
    } else if !others.is_empty() {
        sink.system(
            "install",
            format!("the install scripts of {} did not run either", others.join(", ")),
        )
        .await;
    }
    let scripts = package.get("scripts");
    for script in ["preinstall", "install", "postinstall", "prepare"] {
        if scripts.and_then(|s| s.get(script)).is_some_and(Value::is_string) {
            job.step(sink, report, &run(&["run", script])).await?;
        }
    }
    sink.system(
        "install",
        format!("installed without the install script of {failed}; code that needs what it would have made may fail"),
    )
    .await;
    Ok(())
}

/// Installed packages (one level, scopes included) whose package.json has
/// an install script or a `binding.gyp` (node-gyp's default install), but
/// `except`; sorted, at most 500.
fn packages_with_install_scripts(node_modules: &Path, except: &str) -> Vec<String> {
    // The install scripts that ran may have left links to host paths:
    // nothing here follows one (a linked package goes without a rebuild).
    let real = |path: &Path, dir: bool| {
        std::fs::symlink_metadata(path).is_ok_and(|m| if dir { m.is_dir() } else { m.is_file() })
    };
    let mut names = Vec::new();
    if !real(node_modules, true) {
        return names;
    }
    let entries = |dir: &Path, most: usize| -> Vec<(String, PathBuf)> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .take(most)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect()
    };
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    for (name, path) in entries(node_modules, 5_000) {
        if name.starts_with('.') {
            continue;
        }
        if name.starts_with('@') {
            for (inner, scoped) in entries(&path, 1_000) {
                dirs.push((format!("{name}/{inner}"), scoped));
            }
        } else {
            dirs.push((name, path));
        }
    }
    for (name, dir) in dirs {
        if name == except || names.len() >= 500 {
            continue;
        }
        let manifest_path = dir.join("package.json");
        let manifest = real(&manifest_path, false)
            .then(|| std::fs::read_to_string(&manifest_path).ok())
            .flatten()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        let scripted = manifest.as_ref().and_then(|m| m.get("scripts")).is_some_and(|s| {
            ["preinstall", "install", "postinstall"]
                .iter()
                .any(|k| s.get(*k).is_some_and(Value::is_string))
        });
        if scripted || real(&dir.join("binding.gyp"), false) {
            names.push(name);
        }
    }
    names.sort();
    names
}

/// The manager's install, as the lockfile allows.
async fn install_with(
    job: &Job,
    sink: &mut LogSink,
    report: &mut Report,
    manager: Manager,
    package: &Value,
    run: &(dyn Fn(&[&str]) -> Cmd + Sync),
) -> Step {
    match manager {
        Manager::Npm => {
            let lock = ["package-lock.json", "npm-shrinkwrap.json"]
                .iter()
                .find_map(|f| std::fs::read_to_string(job.dir.join(f)).ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok());
            match lock {
                Some(lock) if npm_lock_matches(package, &lock) => {
                    job.step(sink, report, &run(&["ci"])).await?
                }
                Some(_) => {
                    sink.system(
                        "install",
                        "package-lock.json does not match package.json; running npm install",
                    )
                    .await;
                    job.step(sink, report, &run(&["install"])).await?;
                }
                None => match job.resolve_date() {
                    // No lock: what the repository was written against, as
                    // of its date; as of today when that fails.
                    Some(date) => {
                        sink.system(
                            "install",
                            format!("no lockfile: resolving dependencies as of the repository's date ({date}, npm --before)"),
                        )
                        .await;
                        let before = format!("--before={date}");
                        job.dated_or_today(
                            sink,
                            report,
                            &date,
                            &run(&["install", &before]),
                            &run(&["install"]),
                        )
                        .await?;
                    }
                    None => job.step(sink, report, &run(&["install"])).await?,
                },
            }
        }
        Manager::Pnpm => {
            let lock = std::fs::read_to_string(job.dir.join("pnpm-lock.yaml"))
                .ok()
                .and_then(|t| serde_norway::from_str::<Value>(&t).ok());
            let current = lock.as_ref().is_some_and(|l| pnpm_lock_current(package, l));
            if current {
                match job
                    .step(sink, report, &run(&["install", "--frozen-lockfile"]))
                    .await
                {
                    Err(failure) if !failure.fatal => {
                        sink.system(
                            "install",
                            format!(
                                "frozen install failed ({}); retrying without --frozen-lockfile",
                                failure.message
                            ),
                        )
                        .await;
                        job.step(sink, report, &run(&["install", "--no-frozen-lockfile"]))
                            .await?;
                    }
                    other => other?,
                }
            } else {
                if lock.is_some() {
                    sink.system("install", "pnpm-lock.yaml is not current with package.json; installing without --frozen-lockfile")
                        .await;
                }
                job.step(sink, report, &run(&["install", "--no-frozen-lockfile"]))
                    .await?;
            }
        }
        Manager::YarnClassic => {
            job.step(
                sink,
                report,
                &run(&["install", "--non-interactive", "--no-progress"]),
            )
            .await?;
        }
        Manager::YarnBerry | Manager::Bun => job.step(sink, report, &run(&["install"])).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_dependency_whose_install_script_failed_is_read_from_each_managers_output() {
        let lines = |text: &str| text.lines().map(str::to_owned).collect::<Vec<_>>();
        let npm = lines(
            "npm error code 1\nnpm error path /w/node_modules/sharp\nnpm error command failed\n\
             npm error command sh -c (node install/libvips && node install/dll-copy && prebuild-install)",
        );
        assert_eq!(failed_lifecycle_script(&npm).as_deref(), Some("sharp"));
        let npm6 = lines(
            "npm ERR! code ELIFECYCLE\nnpm ERR! path /w/node_modules/@scope/native\nnpm ERR! command failed",
        );
        assert_eq!(failed_lifecycle_script(&npm6).as_deref(), Some("@scope/native"));
        let gyp = lines(
            "npm error gyp ERR! cwd /w/node_modules/node-sass\nnpm error gyp ERR! node -v v20.20.2\n\
             npm error gyp ERR! not ok\nnpm error Build failed with error code: 1",
        );
        assert_eq!(failed_lifecycle_script(&gyp).as_deref(), Some("node-sass"));
        let yarn = lines("error /w/node_modules/puppeteer: Command failed.\nExit code: 1");
        assert_eq!(failed_lifecycle_script(&yarn).as_deref(), Some("puppeteer"));
        let pnpm = lines(
            "node_modules/.pnpm/sharp@0.32.6/node_modules/sharp install$ node install/libvips\n\
             node_modules/.pnpm/sharp@0.32.6/node_modules/sharp install: Failed\n ELIFECYCLE  Command failed with exit code 1.",
        );
        assert_eq!(failed_lifecycle_script(&pnpm).as_deref(), Some("sharp"));
        // A project's own failing script, or an install failing otherwise, is not one.
        let own = lines("npm error path /w\nnpm error command failed\nnpm error command sh -c node setup.js");
        assert_eq!(failed_lifecycle_script(&own), None);
        let registry =
            lines("npm error code E404\nnpm error 404 Not Found - GET https://registry.npmjs.org/nope");
        assert_eq!(failed_lifecycle_script(&registry), None);
    }

    #[tokio::test]
    async fn a_package_whose_binary_host_is_unreachable_is_refused_naming_host_and_mirror() {
        let prisma: Value = serde_json::from_str(
            r#"{"dependencies": {"@prisma/client": "^5"}, "devDependencies": {"prisma": "^5"}}"#,
        )
        .unwrap();
        let down = |_: &'static str| async { Err("failed to lookup address information".to_owned()) };
        let up = |_: &'static str| async { Ok(()) };
        let refusal = unreachable_binary_host(&prisma, down).await.unwrap();
        assert!(
            refusal.starts_with("prisma downloads its engines from binaries.prisma.sh"),
            "{refusal}"
        );
        assert!(refusal.contains("failed to lookup address") && refusal.contains("PRISMA_ENGINES_MIRROR"));
        assert_eq!(unreachable_binary_host(&prisma, up).await, None, "reachable");
        let plain: Value = serde_json::from_str(r#"{"dependencies": {"express": "^4"}}"#).unwrap();
        assert_eq!(
            unreachable_binary_host(&plain, down).await,
            None,
            "no such package"
        );
    }

    #[test]
    fn engines_refuse_only_a_node_older_than_every_allowed_version() {
        assert_eq!(engines_fit(">=22.12.0", "v20.20.2"), EnginesFit::TooOld);
        assert_eq!(engines_fit("^20.19.0 || >=22.12.0", "v20.20.2"), EnginesFit::Fits);
        assert_eq!(
            engines_fit("^20.19.0 || >=22.12.0", "v20.10.0"),
            EnginesFit::TooOld
        );
        assert_eq!(engines_fit("18.x - 19.x", "v20.20.2"), EnginesFit::TooNew);
        assert_eq!(engines_fit("^8.9", "v20.20.2"), EnginesFit::TooNew);
        assert_eq!(
            engines_fit(">=18 <19 || >=21", "v20.1.0"),
            EnginesFit::Fits,
            "in a gap: no verdict"
        );
        assert_eq!(engines_fit("not a range", "v20.1.0"), EnginesFit::Fits);
        assert_eq!(engines_fit(">=14", "garbage"), EnginesFit::Fits);
    }

    #[test]
    fn links_left_in_node_modules_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("node_modules");
        std::fs::create_dir_all(modules.join("real")).unwrap();
        std::fs::write(
            modules.join("real/package.json"),
            r#"{"scripts": {"install": "x"}}"#,
        )
        .unwrap();
        // A package that is a link to a host directory: not listed, not read.
        let host = tempfile::tempdir().unwrap();
        std::fs::write(
            host.path().join("package.json"),
            r#"{"scripts": {"install": "x"}}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(host.path(), modules.join("linked")).unwrap();
        assert_eq!(packages_with_install_scripts(&modules, "none"), ["real"]);
        // node_modules itself a link: nothing.
        let elsewhere = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&modules, &elsewhere).unwrap();
        assert!(packages_with_install_scripts(&elsewhere, "none").is_empty());
    }

    #[test]
    fn node_sass_is_aliased_to_sass_where_package_json_declares_it() {
        let package =
            json!({"name": "app", "devDependencies": {"node-sass": "^4.14.1", "sass-loader": "^7"}});
        let (drop_in, patched) = drop_in_for("node-sass", &package).unwrap();
        assert_eq!(drop_in, "sass");
        assert_eq!(patched["devDependencies"]["node-sass"], "npm:sass@^1");
        assert_eq!(patched["devDependencies"]["sass-loader"], "^7");
        // Transitive only, or another package: nothing to alias.
        assert!(drop_in_for("node-sass", &json!({"dependencies": {"gulp-sass": "4"}})).is_none());
        assert!(drop_in_for("sharp", &json!({"dependencies": {"sharp": "0.32"}})).is_none());
    }

    #[test]
    fn npm_ci_needs_a_lock_that_records_package_json() {
        let package = json!({"dependencies": {"left-pad": "^1.3.0"}});
        let lock = json!({"lockfileVersion": 3, "packages": {"": {"dependencies": {"left-pad": "^1.3.0"}}}});
        assert!(npm_lock_matches(&package, &lock));
        let stale = json!({"lockfileVersion": 3, "packages": {"": {"dependencies": {"left-pad": "^1.1.0"}}}});
        assert!(!npm_lock_matches(&package, &stale));
        assert!(!npm_lock_matches(
            &package,
            &json!({"lockfileVersion": 1, "dependencies": {}})
        ));
    }

    #[test]
    fn pnpm_lock_is_current_when_specifiers_agree() {
        let package = json!({"dependencies": {"is-odd": "^3.0.1"}});
        let v9: Value = serde_norway::from_str(
            "lockfileVersion: '9.0'\nimporters:\n  .:\n    dependencies:\n      is-odd:\n        specifier: ^3.0.1\n        version: 3.0.1\n",
        )
        .unwrap();
        assert!(pnpm_lock_current(&package, &v9));
        let other = json!({"dependencies": {"is-odd": "^2"}});
        assert!(!pnpm_lock_current(&other, &v9));
    }

    #[test]
    fn the_manager_comes_from_package_manager_then_the_plan_then_the_lock() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/next-pnpm");
        let (manager, version) = choose_manager("", &json!({}), &dir);
        assert_eq!((manager, version.as_str()), (Manager::Pnpm, "9"));
        let (manager, version) =
            choose_manager("", &json!({"packageManager": "pnpm@8.15.4+sha256.abc"}), &dir);
        assert_eq!((manager, version.as_str()), (Manager::Pnpm, "8.15.4"));
        let (manager, _) = choose_manager("yarn", &json!({}), Path::new("/nonexistent"));
        assert_eq!(manager, Manager::YarnClassic);
        assert_eq!(
            choose_manager("", &json!({}), Path::new("/nonexistent")).0,
            Manager::Npm
        );
    }
}

//! Plan patches: what a failed step leaves for the resolver ([`Failure`]),
//! how a patch changes the plan ([`apply_patch`], [`create_file`]), the step
//! a run resumes at after it ([`retry_from`]), and redaction of secrets in
//! what reaches events. The healing loop itself is
//! [`crate::run::healing`]; provisioning is [`crate::run::steps::provision`].

use reporunner_proto::common::v1::{
    BackingService, Command, CommandSlot, Component, EnvVar, PlanPatch, RunPlan, plan_patch::Change,
};

use crate::run::Step;

/// What the failing step left for the resolver.
#[derive(Clone, Debug, Default)]
pub struct Failure {
    /// `reporunner.agents.resolver.v1.Phase`.
    pub phase: i32,
    pub component: String,
    pub exit_code: i32,
    pub log_tail: Vec<String>,
}

/// How many lines of a failing step's log the resolver gets.
pub const TAIL_LINES: usize = 200;

/// The step a run resumes at after `patch`: provision for a new backing
/// service, install for what changes the install or build, setup (then
/// start) for the rest.
pub fn retry_from(patch: &PlanPatch) -> Step {
    match &patch.change {
        Some(Change::AddBackingService(_)) => Step::Provision,
        Some(Change::AddPackage(_) | Change::SetRuntimeVersion(_) | Change::RelaxPin(_)) => Step::Install,
        Some(Change::ReplaceCommand(replace))
            if matches!(
                CommandSlot::try_from(replace.slot),
                Ok(CommandSlot::Install | CommandSlot::Build)
            ) =>
        {
            Step::Install
        }
        _ => Step::Setup,
    }
}

/// Whether two patches are the same change to the same component.
pub fn same_patch(a: &PlanPatch, b: &PlanPatch) -> bool {
    a.component == b.component && a.change == b.change
}

/// A requirement spec, quoted for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// A package name and spec that are safe to pass to a package manager.
fn valid_package(name: &str, spec: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.@/[],<>=!~*^ ".contains(c);
    !name.is_empty()
        && name.len() <= 214
        && spec.len() <= 100
        && !name.starts_with('-')
        && name.chars().all(ok)
        && spec.chars().all(ok)
}

fn is_python(component: &Component) -> bool {
    component.language.eq_ignore_ascii_case("python")
}

fn is_node(component: &Component) -> bool {
    let language = component.language.to_ascii_lowercase();
    language == "javascript" || language == "typescript" || language == "node"
}

/// The commands of package managers, which the dependency agent skips (it
/// does their work itself from the manifests); kept in step with its list.
fn manager_command(run: &str) -> bool {
    let Some(first) = run.split_whitespace().next() else {
        return true;
    };
    let program = first.rsplit('/').next().unwrap_or(first);
    [
        "pip", "pip3", "uv", "poetry", "pipenv", "conda", "mamba", "npm", "pnpm", "yarn", "bun", "npx",
        "corepack", "cargo",
    ]
    .contains(&program)
        || program.starts_with("python")
}

/// Adds `line` to the component's install command. The dependency agent
/// runs an install command only when it is not a package manager's, in the
/// prepared environment (VIRTUAL_ENV, PATH) after its own install: a
/// manager's command (work the agent does itself) is replaced, another one
/// is kept and `line` runs after it.
fn append_install(component: &mut Component, line: &str) {
    let install = component.install.get_or_insert_with(Command::default);
    let current = install.run.trim();
    install.run = if current.is_empty() || manager_command(current) {
        line.to_owned()
    } else {
        format!("{current} && {line}")
    };
}

/// The command that installs `spec` into the component's environment: the
/// dependency agent takes no extra packages, so it is a custom install
/// command (see [`append_install`]). Python: `uv pip install` into
/// `$VIRTUAL_ENV` when uv is on PATH, else `python -m pip` (after
/// `ensurepip`: a uv-made venv has no pip). Node.js: `npm install --no-save`.
fn install_line(component: &Component, spec: &str) -> Result<String, String> {
    let quoted = shell_quote(spec);
    if is_python(component) {
        Ok(format!(
            "if command -v uv >/dev/null 2>&1; then uv pip install {quoted}; \
             else python -m pip --version >/dev/null 2>&1 || python -m ensurepip --upgrade >/dev/null; \
             python -m pip install --disable-pip-version-check {quoted}; fi"
        ))
    } else if is_node(component) {
        Ok(format!("true && npm install --no-save {quoted}"))
    } else {
        Err(format!(
            "adding a package to a {} component is not supported",
            component.language
        ))
    }
}

/// A package spec as its manager writes it.
fn package_spec(component: &Component, name: &str, spec: &str) -> String {
    let spec = spec.trim();
    if spec.is_empty() {
        name.to_owned()
    } else if is_node(component) {
        format!("{name}@{spec}")
    } else {
        format!("{name}{spec}")
    }
}

/// Validates a path for `CreateFile`: relative, plain, inside the workspace.
pub fn safe_relative_path(path: &str) -> Result<std::path::PathBuf, String> {
    let p = std::path::Path::new(path);
    if path.is_empty() || p.is_absolute() || path.contains('\0') {
        return Err(format!("refused file path {path:?}: not a relative path"));
    }
    for part in p.components() {
        match part {
            std::path::Component::Normal(name) if name != ".git" => {}
            _ => {
                return Err(format!(
                    "refused file path {path:?}: it must stay inside the workspace"
                ));
            }
        }
    }
    Ok(p.to_path_buf())
}

/// Applies one patch to the plan. `CreateFile` only checks the path here;
/// the file is written by the caller (see [`create_file`]).
pub fn apply_patch(plan: &mut RunPlan, patch: &PlanPatch) -> Result<(), String> {
    let change = patch.change.as_ref().ok_or("the patch has no change")?;
    let component = if patch.component.is_empty() && plan.components.len() == 1 {
        &mut plan.components[0]
    } else {
        plan.components
            .iter_mut()
            .find(|c| c.name == patch.component)
            .ok_or_else(|| format!("the plan has no component {:?}", patch.component))?
    };
    match change {
        Change::AddPackage(add) => {
            if !valid_package(&add.name, &add.version_spec) {
                return Err(format!("refused package {:?} {:?}", add.name, add.version_spec));
            }
            let spec = package_spec(component, &add.name, &add.version_spec);
            let line = install_line(component, &spec)?;
            append_install(component, &line);
        }
        Change::SetEnvVar(set) => {
            if set.name.is_empty() || !set.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("refused variable name {:?}", set.name));
            }
            match component.env.iter_mut().find(|v| v.name == set.name) {
                Some(var) => var.default_value.clone_from(&set.value),
                None => component.env.push(EnvVar {
                    name: set.name.clone(),
                    default_value: set.value.clone(),
                    required: false,
                    secret: false,
                    source: "resolver".into(),
                }),
            }
        }
        Change::SetPort(set) => {
            let binding = set.binding.trim();
            let valid = binding.is_empty()
                || binding.strip_prefix("env:").is_some_and(|name| {
                    !name.is_empty()
                        && name.len() <= 64
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
                || binding.strip_prefix("flag:").is_some_and(|flag| {
                    flag.starts_with('-')
                        && flag.len() <= 64
                        && flag
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                });
            if !valid {
                return Err(format!("refused port binding {binding:?}"));
            }
            component.port = set.port;
            if !binding.is_empty() {
                component.port_binding = binding.to_owned();
            }
        }
        Change::SetRuntimeVersion(set) => {
            let version = set.version.trim();
            if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return Err(format!("refused runtime version {version:?}"));
            }
            let constraint = if is_python(component) && version.matches('.').count() == 1 {
                format!("=={version}.*")
            } else {
                version.to_owned()
            };
            let runtime = component.runtime.get_or_insert_with(Default::default);
            runtime.version_constraint = constraint;
            // The heal's version is the one to use, whatever was preferred.
            runtime.preferred_version.clear();
        }
        Change::ReplaceCommand(replace) => {
            let command = replace.command.clone().ok_or("the patch has no command")?;
            let slot = match CommandSlot::try_from(replace.slot) {
                Ok(CommandSlot::Install) => &mut component.install,
                Ok(CommandSlot::Build) => &mut component.build,
                Ok(CommandSlot::Start) => &mut component.start,
                Ok(CommandSlot::Test) => &mut component.test,
                _ => return Err("the patch names no command slot".into()),
            };
            *slot = Some(command);
        }
        Change::AddBackingService(add) => {
            let service: BackingService = add.service.clone().ok_or("the patch has no service")?;
            match component
                .backing_services
                .iter_mut()
                .find(|s| s.kind == service.kind)
            {
                Some(existing) => {
                    for name in service.env_vars {
                        if !existing.env_vars.contains(&name) {
                            existing.env_vars.push(name);
                        }
                    }
                }
                None => component.backing_services.push(service),
            }
        }
        Change::AddSetupCommand(add) => {
            let command = add.command.clone().ok_or("the patch has no command")?;
            if command.run.trim().is_empty() {
                return Err("the setup command is empty".into());
            }
            component.setup.push(command);
        }
        Change::RelaxPin(relax) => {
            // The workspace is shared between runs: never edited. The
            // relaxed spec is installed over the pinned one afterwards (the
            // later install wins); a swap installs the other distribution.
            let to = relax.to_spec.trim();
            let starts_with_name = to.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
            let spec = if starts_with_name {
                to.to_owned()
            } else {
                format!("{}{to}", relax.package)
            };
            let (name, rest) = spec
                .find(|c: char| "<>=!~@[ ".contains(c))
                .map_or((spec.as_str(), ""), |at| spec.split_at(at));
            if !valid_package(name, rest) {
                return Err(format!("refused requirement {spec:?}"));
            }
            let line = install_line(component, &spec)?;
            append_install(component, &line);
        }
        Change::CreateFile(create) => {
            safe_relative_path(&create.path)?;
        }
    }
    plan.applied_patches.push(patch.clone());
    Ok(())
}

/// Writes a `CreateFile` patch's file into the workspace when it is not
/// there yet. Workspaces are shared between runs of identical content, so
/// an existing file is never overwritten; the new file stays for later
/// runs of the same content.
pub fn create_file(workspace: &std::path::Path, path: &str, content: &str) -> Result<bool, String> {
    let relative = safe_relative_path(path)?;
    let target = workspace.join(relative);
    if target.exists() {
        return Ok(false);
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {path}: {e}"))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    match std::io::Write::write_all(
        &mut options
            .open(&target)
            .map_err(|e| format!("cannot create {path}: {e}"))?,
        content.as_bytes(),
    ) {
        Ok(()) => Ok(true),
        Err(e) => Err(format!("cannot write {path}: {e}")),
    }
}

/// `text` with the password of every URL in it replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A short text of a patch for events and errors.
pub fn describe(patch: &PlanPatch) -> String {
    let what = match &patch.change {
        Some(Change::AddPackage(p)) => format!("add package {}{}", p.name, p.version_spec),
        Some(Change::SetEnvVar(v)) => format!("set {}", v.name),
        Some(Change::SetPort(p)) if p.binding.is_empty() => format!("set port {}", p.port),
        Some(Change::SetPort(p)) => format!("set port {} ({})", p.port, p.binding),
        Some(Change::SetRuntimeVersion(v)) => format!("runtime version {}", v.version),
        Some(Change::ReplaceCommand(c)) => format!(
            "replace command with `{}`",
            c.command.as_ref().map_or("", |c| c.run.as_str())
        ),
        Some(Change::AddBackingService(s)) => format!(
            "add backing service {}",
            s.service.as_ref().map_or("?", |s| s.kind().as_str_name())
        ),
        Some(Change::AddSetupCommand(c)) => format!(
            "add setup command `{}`",
            c.command.as_ref().map_or("", |c| c.run.as_str())
        ),
        Some(Change::RelaxPin(r)) => format!("relax {} {} → {}", r.package, r.from_spec, r.to_spec),
        Some(Change::CreateFile(f)) => format!("create file {}", f.path),
        None => "nothing".into(),
    };
    if patch.component.is_empty() {
        what
    } else {
        format!("{}: {what}", patch.component)
    }
}

#[cfg(test)]
mod tests {
    use reporunner_proto::common::v1::{
        AddBackingService, AddPackage, BackingServiceKind, CreateFile, RelaxPin, ReplaceCommand, Runtime,
        SetEnvVar, SetPort, SetRuntimeVersion,
    };

    use super::*;

    fn plan() -> RunPlan {
        RunPlan {
            components: vec![Component {
                name: "app".into(),
                language: "python".into(),
                install: Some(Command {
                    run: "pip install -r requirements.txt".into(),
                    ..Command::default()
                }),
                runtime: Some(Runtime {
                    name: "python".into(),
                    version_constraint: String::new(),
                    preferred_version: String::new(),
                }),
                ..Component::default()
            }],
            ..RunPlan::default()
        }
    }

    fn patch(change: Change) -> PlanPatch {
        PlanPatch {
            component: "app".into(),
            reason: "test".into(),
            change: Some(change),
        }
    }

    #[test]
    fn every_patch_kind_applies_and_is_recorded() {
        let mut plan = plan();
        let add = patch(Change::AddPackage(AddPackage {
            name: "python-dotenv".into(),
            version_spec: String::new(),
        }));
        apply_patch(&mut plan, &add).unwrap();
        let install = plan.components[0].install.clone().unwrap().run;
        assert!(install.contains("uv pip install 'python-dotenv'"), "{install}");
        assert!(!manager_command(&install), "{install}");
        assert_eq!(retry_from(&add), Step::Install);
        let relax = patch(Change::RelaxPin(RelaxPin {
            package: "psycopg2".into(),
            from_spec: "==2.9.3".into(),
            to_spec: "psycopg2-binary==2.9.3".into(),
        }));
        apply_patch(&mut plan, &relax).unwrap();
        let install = plan.components[0].install.clone().unwrap().run;
        assert!(install.contains("&& if command"), "{install}");
        assert!(install.contains("'psycopg2-binary==2.9.3'"), "{install}");
        let env = patch(Change::SetEnvVar(SetEnvVar {
            name: "SECRET_KEY".into(),
            value: "x".into(),
        }));
        apply_patch(&mut plan, &env).unwrap();
        assert_eq!(plan.components[0].env[0].default_value, "x");
        assert_eq!(retry_from(&env), Step::Setup);
        apply_patch(
            &mut plan,
            &patch(Change::SetPort(SetPort {
                port: 0,
                binding: String::new(),
            })),
        )
        .unwrap();
        apply_patch(
            &mut plan,
            &patch(Change::SetRuntimeVersion(SetRuntimeVersion {
                version: "3.11".into(),
            })),
        )
        .unwrap();
        assert_eq!(
            plan.components[0].runtime.clone().unwrap().version_constraint,
            "==3.11.*"
        );
        let replace = patch(Change::ReplaceCommand(ReplaceCommand {
            slot: CommandSlot::Start.into(),
            command: Some(Command {
                run: "python app.py".into(),
                ..Command::default()
            }),
        }));
        apply_patch(&mut plan, &replace).unwrap();
        assert_eq!(plan.components[0].start.clone().unwrap().run, "python app.py");
        let backing = patch(Change::AddBackingService(AddBackingService {
            service: Some(BackingService {
                kind: BackingServiceKind::Postgresql.into(),
                env_vars: vec!["DATABASE_URL".into()],
                ..BackingService::default()
            }),
        }));
        apply_patch(&mut plan, &backing).unwrap();
        assert_eq!(retry_from(&backing), Step::Provision);
        assert_eq!(plan.components[0].backing_services.len(), 1);
        let bad = patch(Change::CreateFile(CreateFile {
            path: "../x".into(),
            content: String::new(),
        }));
        assert!(apply_patch(&mut plan, &bad).is_err());
        assert_eq!(plan.applied_patches.len(), 7);
        let unknown = PlanPatch {
            component: "nope".into(),
            ..add
        };
        assert!(apply_patch(&mut plan, &unknown).is_err());
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact("DATABASE_URL=postgresql://rr_x:secret@127.0.0.1:5432/rr_x and redis://127.0.0.1:6379/3"),
            "DATABASE_URL=postgresql://rr_x:***@127.0.0.1:5432/rr_x and redis://127.0.0.1:6379/3"
        );
        assert_eq!(redact("no url"), "no url");
    }

    #[test]
    fn created_files_stay_inside_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        assert!(create_file(dir.path(), ".env", "A=1\n").unwrap());
        assert!(!create_file(dir.path(), ".env", "A=2\n").unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join(".env")).unwrap(), "A=1\n");
        assert!(create_file(dir.path(), "/etc/x", "").is_err());
        assert!(create_file(dir.path(), "a/../../x", "").is_err());
        assert!(create_file(dir.path(), ".git/config", "").is_err());
    }
}

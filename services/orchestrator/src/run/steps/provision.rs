//! Provision: the provisioner supplies the backing services (PostgreSQL,
//! Redis, ...) that the run's components need, one per kind, and their env
//! reaches the components. Also where the set-up steps' components are
//! chosen ([`select`]), since provision is the first of those steps.

use reporunner_proto::orchestrator::v1::StepStatus;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use reporunner_proto::{
    agents::provisioner::v1::{ProvisionMode, ProvisionRequest, ReleaseRequest},
    common::v1::{BackingService, BackingServiceKind, Component, ComponentKind},
    orchestrator::v1::{RunGoal, RunState},
};

use crate::{
    heal::redact,
    run::{
        Engine, Flow, Halt, RunContext, Step, failure_message,
        steps::{skip, skipped_on_request},
    },
    store::RunChange,
};

/// Why a component is not started for goal START, when it is not.
pub(crate) fn not_startable(component: &Component) -> Option<String> {
    let kind = ComponentKind::try_from(component.kind).unwrap_or(ComponentKind::Unspecified);
    match kind {
        ComponentKind::Library => return Some("it is a library (try goal TEST)".into()),
        ComponentKind::Cli => return Some("it is a command-line program, not a service".into()),
        ComponentKind::Web
        | ComponentKind::Worker
        | ComponentKind::Static
        | ComponentKind::Service
        | ComponentKind::Unspecified => {}
    }
    let start = component.start.as_ref().map_or("", |c| c.run.trim());
    start
        .is_empty()
        .then(|| "the plan has no start command for it".into())
}

/// Whether `component` has a test command.
pub(crate) fn testable(component: &Component) -> bool {
    component.test.as_ref().is_some_and(|t| !t.run.trim().is_empty())
}

/// Chooses the components the set-up steps work on, from the plan and the
/// goal: the startable ones for START and START_AND_TEST (which runs the
/// tests only when nothing can be started), the testable ones for TEST.
/// Fails the run when there are none. `announce` says, once per run, which
/// components are not started and why.
pub(crate) async fn select(engine: &Engine, ctx: &mut RunContext, announce: bool) -> Flow {
    let plan = ctx
        .plan
        .clone()
        .ok_or_else(|| Halt::Failed("the analyzer returned no plan".into()))?;
    let testable: Vec<Component> = plan.components.iter().filter(|c| testable(c)).cloned().collect();
    let no_tests = || Halt::Failed("test failed: no component of the plan has a test command".into());
    if ctx.goal == RunGoal::Test {
        ctx.components = Some(testable.clone());
        ctx.starts = false;
        return if testable.is_empty() {
            Err(no_tests())
        } else {
            Ok(())
        };
    }
    let mut startable = Vec::new();
    let mut skipped = Vec::new();
    for component in &plan.components {
        match not_startable(component) {
            None => startable.push(component.clone()),
            Some(why) => skipped.push((component.name.clone(), why)),
        }
    }
    if startable.is_empty() && ctx.goal == RunGoal::StartAndTest {
        // A library: its tests alone, as for TEST.
        if announce {
            let text = "no component of the plan can be started; running the tests only";
            engine.notice(&ctx.run_id, text.into()).await?;
        }
        ctx.components = Some(testable.clone());
        ctx.starts = false;
        return if testable.is_empty() {
            Err(no_tests())
        } else {
            Ok(())
        };
    }
    if announce {
        for (name, why) in &skipped {
            engine
                .notice(&ctx.run_id, format!("{name} is not started: {why}"))
                .await?;
        }
    }
    if startable.is_empty() {
        return Err(Halt::Failed(if skipped.is_empty() {
            "start failed: the analyzer found no component to start in this repository".into()
        } else {
            let skipped: Vec<String> = skipped
                .iter()
                .map(|(name, why)| format!("{name} ({why})"))
                .collect();
            format!(
                "start failed: no component of the plan can be started: {}",
                skipped.join("; ")
            )
        }));
    }
    ctx.components = Some(startable);
    ctx.starts = true;
    Ok(())
}

pub(crate) async fn run(engine: &Engine, ctx: &mut RunContext) -> Flow {
    if ctx.components.is_none() {
        select(engine, ctx, true).await?;
    }
    let components = ctx.components().to_vec();
    provision(engine, ctx, &components).await
}

/// Provisions the backing services of `components` not provisioned yet in
/// this run, one per kind.
pub(crate) async fn provision(engine: &Engine, ctx: &mut RunContext, components: &[Component]) -> Flow {
    let run_id = ctx.run_id.clone();
    let wanted = wanted(ctx, components);
    if wanted.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = wanted.values().map(|s| kind_name(s.kind)).collect();
    if skipped_on_request(ctx, Step::Provision) || !engine.clients.provisioner.is_configured() {
        let why = if skipped_on_request(ctx, Step::Provision) {
            format!(
                "{}: the provisioner was skipped on request; the components get no backing service",
                kinds.join(", ")
            )
        } else {
            format!(
                "the components need {} but this orchestrator has no provisioner (endpoints.provisioner); they get none",
                kinds.join(", ")
            )
        };
        // Not again on a retry.
        for kind in wanted.keys() {
            ctx.provisioned.insert(*kind, BTreeMap::new());
        }
        return if skipped_on_request(ctx, Step::Provision) {
            skip(engine, ctx, Step::Provision, why).await
        } else {
            engine.notice(&run_id, why).await
        };
    }
    engine
        .enter(&run_id, RunState::Provisioning, RunChange::default())
        .await?;
    let run_dir = engine.config.provision_run_dir(&run_id);
    for (kind, service) in wanted {
        let what = kind_name(kind);
        let started = Instant::now();
        engine
            .step(
                &run_id,
                Step::Provision,
                StepStatus::Started,
                what.to_owned(),
                Duration::ZERO,
            )
            .await?;
        let request = ProvisionRequest {
            run_id: run_id.clone(),
            service: Some(service),
            run_dir: run_dir.display().to_string(),
        };
        let response = crate::run::until_cancel(&ctx.cancel, async {
            Ok(engine.clients.provisioner.provision(request).await)
        })
        .await?;
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                ctx.note(&err);
                let message = redact(&failure_message(Step::Provision, &err));
                return Err(engine
                    .step_failed(&run_id, Step::Provision, message, started.elapsed())
                    .await);
            }
        };
        let how = match response.mode() {
            ProvisionMode::Reused => "reused the shared server",
            ProvisionMode::Started => "started a private server",
            ProvisionMode::Unspecified => "provisioned",
        };
        let url = response
            .env
            .iter()
            .find(|(k, _)| k.as_str() == "DATABASE_URL" || k.as_str() == "REDIS_URL")
            .map(|(k, v)| format!(", {k}={}", redact(v)))
            .unwrap_or_default();
        let names: Vec<&str> = response.env.keys().map(String::as_str).collect();
        let detail = format!(
            "{what}: {how} (resource {}){url}; env {}",
            response.resource_id,
            names.join(", ")
        );
        ctx.provisioned.insert(kind, response.env.into_iter().collect());
        engine
            .step(
                &run_id,
                Step::Provision,
                StepStatus::Finished,
                detail,
                started.elapsed(),
            )
            .await?;
    }
    Ok(())
}

/// The backing services `components` need that this run has not got yet,
/// one per kind with every env var asked for.
fn wanted(ctx: &RunContext, components: &[Component]) -> BTreeMap<i32, BackingService> {
    let mut wanted: BTreeMap<i32, BackingService> = BTreeMap::new();
    for service in components.iter().flat_map(|c| &c.backing_services) {
        if ctx.provisioned.contains_key(&service.kind) {
            continue;
        }
        let entry = wanted.entry(service.kind).or_insert_with(|| BackingService {
            kind: service.kind,
            version: service.version.clone(),
            ..BackingService::default()
        });
        for name in &service.env_vars {
            if !entry.env_vars.contains(name) {
                entry.env_vars.push(name.clone());
            }
        }
    }
    wanted
}

/// Releases every backing service of the run; a failure is a notice.
pub(crate) async fn release_backing(engine: &Engine, run_id: &str) {
    if !engine.clients.provisioner.is_configured() {
        return;
    }
    let request = ReleaseRequest {
        run_id: run_id.to_owned(),
        resource_ids: Vec::new(),
    };
    match engine.clients.provisioner.release(request).await {
        Ok(response) => {
            if !response.released.is_empty() {
                tracing::info!(
                    run_id,
                    released = response.released.len(),
                    "backing services released"
                );
            }
        }
        Err(err) => {
            let detail = match &err {
                crate::OrchestratorError::AgentFailed { status, .. } => status.message().to_owned(),
                other => other.to_string(),
            };
            let text = format!(
                "the run's backing services could not be released: {}",
                redact(&detail)
            );
            tracing::warn!(run_id, error = %text, "release failed");
            let _ = engine.notice(run_id, text).await;
        }
    }
}

fn kind_name(kind: i32) -> &'static str {
    match BackingServiceKind::try_from(kind).unwrap_or(BackingServiceKind::Unspecified) {
        BackingServiceKind::Postgresql => "postgresql",
        BackingServiceKind::Mysql => "mysql",
        BackingServiceKind::Redis => "redis",
        BackingServiceKind::Mongodb => "mongodb",
        BackingServiceKind::Rabbitmq => "rabbitmq",
        BackingServiceKind::Unspecified => "unknown backing service",
    }
}

#[cfg(test)]
mod tests {
    use reporunner_proto::common::v1::Command;

    use super::*;

    fn component(kind: ComponentKind, start: &str) -> Component {
        Component {
            name: "c".into(),
            kind: kind.into(),
            start: Some(Command {
                run: start.into(),
                ..Command::default()
            }),
            ..Component::default()
        }
    }

    #[test]
    fn services_start_and_libraries_and_clis_do_not() {
        for kind in [
            ComponentKind::Web,
            ComponentKind::Worker,
            ComponentKind::Static,
            ComponentKind::Unspecified,
        ] {
            assert_eq!(not_startable(&component(kind, "python app.py")), None, "{kind:?}");
        }
        let library = not_startable(&component(ComponentKind::Library, "")).unwrap();
        assert!(
            library.contains("library") && library.contains("TEST"),
            "{library}"
        );
        assert!(not_startable(&component(ComponentKind::Cli, "tool")).is_some());
        let missing = not_startable(&component(ComponentKind::Web, "  ")).unwrap();
        assert!(missing.contains("no start command"), "{missing}");
    }
}

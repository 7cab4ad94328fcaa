//! The healing loop: after a failed set-up step, the resolver is asked
//! about what the step left ([`Failure`](crate::heal::Failure)); the first
//! diagnosis with patches not tried yet in this run is applied to the plan,
//! recorded as a `HealEvent` (and `plan.applied_patches`), and the engine
//! resumes its list at the step the patches need
//! ([`retry_from`](crate::heal::retry_from)). At most the tier's
//! `max_heal_attempts` times; without a resolver, or with it skipped, the
//! failure stands.

use reporunner_proto::{
    agents::resolver::v1::DiagnoseRequest,
    common::v1::{PlanPatch, plan_patch::Change},
    orchestrator::v1::{HealEvent, run_event},
};

use crate::{
    heal::{apply_patch, create_file, describe, retry_from, same_patch},
    run::{Engine, Flow, RunContext, Step, step::RESOLVER},
    store::RunChange,
};

/// What the resolver made of a failure.
pub(crate) enum Healed {
    /// The plan was patched: resume the list at this step.
    Retry(Step),
    /// Nothing new to try; the diagnosis's summary when there was one, and
    /// the log line it matched (empty when none).
    No(Option<(String, String)>),
}

/// Asks the resolver about the last failure and applies the first
/// diagnosis with patches not tried yet.
pub(crate) async fn heal(engine: &Engine, ctx: &mut RunContext) -> Flow<Healed> {
    let Some(failure) = ctx.take_failure() else {
        return Ok(Healed::No(None));
    };
    if ctx.skips(RESOLVER) || !engine.clients.resolver.is_configured() {
        return Ok(Healed::No(None));
    }
    let Some(mut plan) = ctx.plan.clone() else {
        return Ok(Healed::No(None));
    };
    let request = DiagnoseRequest {
        phase: failure.phase,
        component: failure.component.clone(),
        exit_code: failure.exit_code,
        log_tail: failure.log_tail.clone(),
        plan: Some(plan.clone()),
        environment: ctx.environment.clone(),
        tried: ctx.tried.clone(),
        packages: ctx
            .packages
            .get(&failure.component)
            .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    };
    let diagnoses = match engine.clients.resolver.diagnose(request).await {
        Ok(diagnoses) => diagnoses,
        Err(err) => {
            tracing::warn!(error = %err, "the resolver failed");
            return Ok(Healed::No(None));
        }
    };
    let summary = diagnoses
        .first()
        .map(|d| (format!("{} ({})", d.summary, d.cause), d.matched_line.clone()));
    if ctx.heals >= ctx.max_heal_attempts {
        let summary = summary.map(|(s, line)| {
            (
                format!(
                    "{s}; not healed: your tier allows {} heal attempt(s) per run",
                    ctx.max_heal_attempts
                ),
                line,
            )
        });
        return Ok(Healed::No(summary));
    }
    let workspace = ctx.workspace_path()?;
    for diagnosis in diagnoses {
        let applied = apply_new(engine, ctx, &mut plan, &diagnosis.patches, &workspace).await?;
        let Some(from) = applied.iter().map(retry_from).min() else {
            continue;
        };
        ctx.heals += 1;
        ctx.plan = Some(plan.clone());
        let event = run_event::Event::Heal(HealEvent {
            attempt: ctx.heals,
            cause: diagnosis.cause.clone(),
            summary: diagnosis.summary.clone(),
            patches: applied.clone(),
            retry_from: from.to_proto().into(),
        });
        let change = RunChange {
            plan: Some(plan),
            attempts: Some(ctx.heals + 1),
            ..RunChange::default()
        };
        engine.emit(&ctx.run_id, change, event).await?;
        tracing::info!(
            cause = %diagnosis.cause,
            patches = %applied.iter().map(describe).collect::<Vec<_>>().join("; "),
            retry_from = from.name(),
            "run healed"
        );
        return Ok(Healed::Retry(from));
    }
    Ok(Healed::No(summary))
}

/// Applies the patches of `patches` not tried yet in this run to `plan`
/// (and the files they create to the workspace); the ones that applied. A
/// patch that does not apply is a notice.
async fn apply_new(
    engine: &Engine,
    ctx: &mut RunContext,
    plan: &mut reporunner_proto::common::v1::RunPlan,
    patches: &[PlanPatch],
    workspace: &str,
) -> Flow<Vec<PlanPatch>> {
    let new: Vec<PlanPatch> = patches
        .iter()
        .filter(|p| !ctx.tried.iter().any(|t| same_patch(t, p)))
        .cloned()
        .collect();
    let mut applied = Vec::new();
    for patch in new {
        ctx.tried.push(patch.clone());
        let mut outcome = apply_patch(plan, &patch);
        if outcome.is_ok()
            && let Some(Change::CreateFile(file)) = &patch.change
        {
            outcome = create_file(std::path::Path::new(workspace), &file.path, &file.content).map(drop);
        }
        match outcome {
            Ok(()) => applied.push(patch),
            Err(why) => {
                engine
                    .notice(
                        &ctx.run_id,
                        format!("patch not applied ({}): {why}", describe(&patch)),
                    )
                    .await?;
            }
        }
    }
    Ok(applied)
}

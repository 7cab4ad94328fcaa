//! Install and build: one call of the dependency agent per component, in
//! plan order. The agent installs the component's dependencies, then runs
//! its build command on the same call: [`install`] follows the call until
//! the build begins, [`build`] follows the rest. Skipping the dependency
//! agent skips both (the component runs with what the host has).

use reporunner_proto::orchestrator::v1::StepStatus;
use std::{collections::BTreeMap, time::Duration};

use reporunner_proto::common::v1::Component;

use crate::run::{
    Engine, Flow, RunContext, Step,
    steps::{
        build,
        install::{self, component_env},
        skipped_on_request,
    },
};

/// Installs and builds every component the set-up steps work on, in plan
/// order; each one's env is kept for the steps after.
pub(crate) async fn run(engine: &Engine, ctx: &mut RunContext) -> Flow {
    for component in ctx.components().to_vec() {
        // Installed already when the list resumes after a component was
        // left down.
        if ctx.installed.contains_key(&component.name) {
            continue;
        }
        let installed = install_and_build(engine, ctx, &component).await?;
        ctx.installed.insert(component.name.clone(), installed.env);
        ctx.packages.insert(component.name.clone(), installed.packages);
    }
    Ok(())
}

/// What one component's install and build gave.
pub(crate) struct Installed {
    /// Its environment for the runner: the install's env with the user's
    /// over it.
    pub env: BTreeMap<String, String>,
    /// What the environment provides (`InstallResult.packages`).
    pub packages: BTreeMap<String, String>,
}

/// Installs and builds one component.
pub(crate) async fn install_and_build(
    engine: &Engine,
    ctx: &RunContext,
    component: &Component,
) -> Flow<Installed> {
    let name = component.name.as_str();
    if skipped_on_request(ctx, Step::Install) {
        let why = format!("{name}: the dependency agent was skipped on request");
        engine
            .step(
                &ctx.run_id,
                Step::Install,
                StepStatus::Skipped,
                why.clone(),
                Duration::ZERO,
            )
            .await?;
        engine
            .step(&ctx.run_id, Step::Build, StepStatus::Skipped, why, Duration::ZERO)
            .await?;
        return Ok(Installed {
            env: component_env([], &ctx.env),
            packages: BTreeMap::new(),
        });
    }
    let after_install = install::install(engine, ctx, component).await?;
    let result = build::run(engine, ctx, component, after_install).await?;
    Ok(Installed {
        env: component_env(result.env, &ctx.env),
        packages: result.packages.into_iter().collect(),
    })
}

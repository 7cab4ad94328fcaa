//! Plugins: external agents called at hooks of a run
//! (`reporunner.agents.plugin.v1.PluginService`), registered in config
//! (`[[orchestrator.plugins]]`: name, endpoints, deadline) and called through
//! the same client stack as the agents.
//!
//! The engine calls [`Plugins::before`] and [`Plugins::after`] around each
//! step; the hooks map onto the step list: after `analyze`, before `start`,
//! after `probe` (every component healthy) and after `test`. Once per run,
//! each plugin is asked which hooks it serves (`Describe`); at each of those
//! it gets the run's plan and context (`Execute`) and answers with notices,
//! plan patches (applied as the resolver's are) or a verdict that fails the
//! run with its reason. A plugin that fails or misses its deadline is a
//! notice, never a hang. A tier whose policy has `plugins = false` never has
//! a plugin called.

use std::time::Duration;

use reporunner_client::Transport;
use reporunner_proto::{
    agents::plugin::v1::{
        DescribeRequest, ExecuteRequest, ExecuteResponse, Hook, plugin_service_client::PluginServiceClient,
    },
    common::v1::plan_patch::Change,
    orchestrator::v1::ComponentStatus,
};

use crate::{
    OrchestratorConfig, OrchestratorError, Result,
    heal::{apply_patch, create_file, describe},
    run::{Engine, Flow, Halt, RunContext, Step, steps::provision},
    store::RunChange,
};

/// One registered plugin.
#[derive(Clone, Debug)]
pub(crate) struct Plugin {
    pub name: String,
    transport: Transport,
    deadline: Duration,
}

impl Plugin {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.deadline);
        request
    }

    /// A failed call, or one past its deadline, in words.
    fn failed(&self, status: tonic::Status) -> OrchestratorError {
        OrchestratorError::from_agent("plugin", status)
    }

    /// Races `call` against the plugin's deadline (the channel's deadline
    /// covers the network; this covers a plugin that never answers).
    async fn within<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.deadline, call)
            .await
            .unwrap_or_else(|_| {
                Err(OrchestratorError::AgentDeadline {
                    agent: "plugin",
                    detail: format!("no answer within {} ms", self.deadline.as_millis()),
                })
            })
    }

    async fn describe(&self) -> Result<Vec<Hook>> {
        let call = async {
            PluginServiceClient::new(self.transport.clone())
                .describe(self.request(DescribeRequest {}))
                .await
                .map_err(|status| self.failed(status))
        };
        let response = self.within(call).await?.into_inner();
        Ok(response.hooks().collect())
    }

    async fn execute(&self, request: ExecuteRequest) -> Result<ExecuteResponse> {
        let call = async {
            PluginServiceClient::new(self.transport.clone())
                .execute(self.request(request))
                .await
                .map_err(|status| self.failed(status))
        };
        Ok(self.within(call).await?.into_inner())
    }
}

/// The plugins of this orchestrator, in config order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plugins {
    plugins: Vec<Plugin>,
}

/// The hook served before `step`, when the run is at that point.
fn hook_before(step: Step, ctx: &RunContext) -> Option<Hook> {
    (step == Step::Start && ctx.starts).then_some(Hook::BeforeStart)
}

/// The hook served after `step`.
fn hook_after(step: Step, ctx: &RunContext) -> Option<Hook> {
    match step {
        Step::Analyze => Some(Hook::AfterAnalyze),
        Step::Probe if ctx.monitor.is_some() => Some(Hook::AfterStart),
        Step::Test => Some(Hook::AfterTests),
        _ => None,
    }
}

impl Plugins {
    /// The plugins `config` registers, over `channels` (one per plugin, by
    /// name, built by the node with the orchestrator's identity).
    pub fn new(config: &OrchestratorConfig, channels: &[(String, Transport)]) -> Self {
        let plugins = config
            .plugins
            .iter()
            .filter_map(|plugin| {
                let channel = channels.iter().find(|(name, _)| *name == plugin.name)?;
                Some(Plugin {
                    name: plugin.name.clone(),
                    transport: channel.1.clone(),
                    deadline: plugin.deadline,
                })
            })
            .collect();
        Self { plugins }
    }

    pub(crate) async fn before(&self, engine: &Engine, ctx: &mut RunContext, step: Step) -> Flow {
        match hook_before(step, ctx) {
            Some(hook) => self.call(engine, ctx, hook).await,
            None => Ok(()),
        }
    }

    pub(crate) async fn after(&self, engine: &Engine, ctx: &mut RunContext, step: Step) -> Flow {
        match hook_after(step, ctx) {
            Some(hook) => self.call(engine, ctx, hook).await,
            None => Ok(()),
        }
    }

    /// Calls every plugin that serves `hook`, in order.
    async fn call(&self, engine: &Engine, ctx: &mut RunContext, hook: Hook) -> Flow {
        if self.plugins.is_empty() || !ctx.plugins_allowed {
            return Ok(());
        }
        if ctx.plugin_hooks.is_none() {
            let mut served = Vec::with_capacity(self.plugins.len());
            for plugin in &self.plugins {
                match plugin.describe().await {
                    Ok(hooks) => served.push(hooks),
                    Err(err) => {
                        engine
                            .notice(
                                &ctx.run_id,
                                format!("plugin {}: not called in this run: {err}", plugin.name),
                            )
                            .await?;
                        served.push(Vec::new());
                    }
                }
            }
            ctx.plugin_hooks = Some(served);
        }
        for (index, plugin) in self.plugins.iter().enumerate() {
            let serves = ctx
                .plugin_hooks
                .as_ref()
                .and_then(|served| served.get(index))
                .is_some_and(|hooks| hooks.contains(&hook));
            if serves {
                self.execute(engine, ctx, plugin, hook).await?;
            }
        }
        Ok(())
    }

    async fn execute(&self, engine: &Engine, ctx: &mut RunContext, plugin: &Plugin, hook: Hook) -> Flow {
        let hook_name = hook.as_str_name().trim_start_matches("HOOK_").to_lowercase();
        let request = ExecuteRequest {
            hook: hook.into(),
            run_id: ctx.run_id.clone(),
            goal: ctx.goal.into(),
            workspace_id: ctx.workspace.as_ref().map(|w| w.id.clone()).unwrap_or_default(),
            workspace_path: ctx.workspace.as_ref().map(|w| w.path.clone()).unwrap_or_default(),
            plan: ctx.plan.clone(),
            environment: ctx.environment.clone(),
            components: ctx
                .monitor
                .as_ref()
                .map(|m| {
                    m.components
                        .iter()
                        .map(|c| ComponentStatus {
                            name: c.name.clone(),
                            url: c.url.clone(),
                            health: c.health,
                            port: c.port,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            test_results: ctx.test_results.clone(),
        };
        let response = tokio::select! {
            () = ctx.cancel.cancelled() => return Err(Halt::Taken),
            response = plugin.execute(request) => response,
        };
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                tracing::warn!(plugin = %plugin.name, hook = %hook_name, error = %err, "a plugin failed");
                let text = format!(
                    "plugin {} failed at {hook_name}; the run goes on: {err}",
                    plugin.name
                );
                return engine.notice(&ctx.run_id, text).await;
            }
        };
        for line in response.notices.iter().take(MAX_NOTICES) {
            engine
                .notice(&ctx.run_id, format!("plugin {}: {line}", plugin.name))
                .await?;
        }
        if !response.patches.is_empty() {
            self.patch(engine, ctx, plugin, hook, &response).await?;
        }
        match response.verdict {
            Some(verdict) if verdict.fail => Err(Halt::Failed(format!(
                "plugin {} failed the run at {hook_name}: {}",
                plugin.name,
                if verdict.reason.trim().is_empty() {
                    "no reason given"
                } else {
                    verdict.reason.trim()
                }
            ))),
            _ => Ok(()),
        }
    }

    /// Applies a plugin's patches to the plan (before start only, where
    /// later steps still use the plan).
    async fn patch(
        &self,
        engine: &Engine,
        ctx: &mut RunContext,
        plugin: &Plugin,
        hook: Hook,
        response: &ExecuteResponse,
    ) -> Flow {
        if !matches!(hook, Hook::AfterAnalyze | Hook::BeforeStart) {
            let text = format!(
                "plugin {}: {} patch(es) ignored: the plan is applied by then",
                plugin.name,
                response.patches.len()
            );
            return engine.notice(&ctx.run_id, text).await;
        }
        let Some(mut plan) = ctx.plan.clone() else {
            return Ok(());
        };
        let workspace = ctx.workspace.as_ref().map(|w| w.path.clone()).unwrap_or_default();
        let mut applied = Vec::new();
        for patch in response.patches.iter().take(MAX_PATCHES) {
            let mut outcome = apply_patch(&mut plan, patch);
            if outcome.is_ok()
                && let Some(Change::CreateFile(file)) = &patch.change
            {
                outcome = create_file(std::path::Path::new(&workspace), &file.path, &file.content).map(drop);
            }
            match outcome {
                Ok(()) => applied.push(describe(patch)),
                Err(why) => {
                    let text = format!(
                        "plugin {}: patch not applied ({}): {why}",
                        plugin.name,
                        describe(patch)
                    );
                    engine.notice(&ctx.run_id, text).await?;
                }
            }
        }
        if applied.is_empty() {
            return Ok(());
        }
        ctx.plan = Some(plan.clone());
        let change = RunChange {
            plan: Some(plan),
            ..RunChange::default()
        };
        let text = format!("plugin {} patched the plan: {}", plugin.name, applied.join("; "));
        engine
            .emit(
                &ctx.run_id,
                change,
                reporunner_proto::orchestrator::v1::run_event::Event::Notice(text),
            )
            .await?;
        if ctx.components.is_some() {
            provision::select(engine, ctx, false).await?;
        }
        Ok(())
    }
}

/// The most notices and patches taken from one answer.
const MAX_NOTICES: usize = 20;
const MAX_PATCHES: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_sit_between_the_steps_they_name() {
        let mut ctx = RunContext::default();
        assert_eq!(hook_after(Step::Analyze, &ctx), Some(Hook::AfterAnalyze));
        assert_eq!(hook_after(Step::Test, &ctx), Some(Hook::AfterTests));
        // Nothing started: no start hooks.
        assert_eq!(hook_before(Step::Start, &ctx), None);
        assert_eq!(hook_after(Step::Probe, &ctx), None);
        ctx.starts = true;
        assert_eq!(hook_before(Step::Start, &ctx), Some(Hook::BeforeStart));
        for step in [
            Step::Fetch,
            Step::Install,
            Step::Build,
            Step::Setup,
            Step::Monitor,
        ] {
            assert_eq!(hook_before(step, &ctx), None, "{step:?}");
            assert_eq!(hook_after(step, &ctx), None, "{step:?}");
        }
    }
}

//! The resolver agent: why did a step of a run fail, and what typed change
//! to the plan would fix it?
//!
//! [`RuleResolver`] matches the bounded tail of the failing step's log
//! against a catalog of rules ([`rules`]), one module per ecosystem, each
//! recognising a recurring failure class (a missing module, a port in use, an
//! unmigrated database, ...) and proposing [`PlanPatch`]es. Diagnoses are
//! ranked most specific first; patches already tried are never proposed
//! again; every patch passes [`safety::check`]. When no rule matches and an
//! advisor is configured, an OpenAI-compatible endpoint is asked
//! ([`advisor`]), and its suggestions pass the same filter.
//!
//! The domain lives behind [`Resolver`]; [`grpc`] is a thin adapter.
#![forbid(unsafe_code)]

pub mod advisor;
pub mod config;
pub mod error;
/// Entry points of the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod metrics;
pub mod rules;
pub mod safety;
pub mod versions;

use std::sync::Arc;

pub use config::{AdvisorConfig, ResolverConfig};
pub use error::{ResolverError, Result};
use reporunner_proto::{
    agents::resolver::v1::{DiagnoseRequest, DiagnoseResponse, Diagnosis, DiagnosisSource, Phase},
    common::v1::{PlanPatch, plan_patch::Change},
};
use rules::{CATALOG, Context};
use tracing::Instrument as _;

/// The resolver agent's domain.
pub trait Resolver: Send + Sync + 'static {
    /// Classifies a failure; an empty response when nothing is known.
    fn diagnose(&self, request: DiagnoseRequest) -> impl Future<Output = Result<DiagnoseResponse>> + Send;
}

/// The rule catalog, with the optional advisor behind it.
#[derive(Clone, Debug)]
pub struct RuleResolver {
    config: Arc<ResolverConfig>,
    advisor: Option<advisor::Advisor>,
}

impl RuleResolver {
    pub fn new(config: ResolverConfig) -> Result<Self> {
        config.validate()?;
        metrics::describe();
        let advisor = if config.advisor.enabled {
            Some(advisor::Advisor::new(&config.advisor)?)
        } else {
            None
        };
        // Compile the catalog now rather than on the first request.
        std::sync::LazyLock::force(&CATALOG);
        Ok(Self {
            config: Arc::new(config),
            advisor,
        })
    }

    fn validate(&self, request: &DiagnoseRequest) -> Result<()> {
        if request.log_tail.iter().all(|l| l.trim().is_empty()) && request.exit_code == 0 {
            return Err(ResolverError::InvalidRequest(
                "nothing to diagnose: the request has no log tail and no exit code".to_owned(),
            ));
        }
        if request.tried.len() > self.config.max_tried {
            return Err(ResolverError::InvalidRequest(format!(
                "{} tried patches is over the limit of {}",
                request.tried.len(),
                self.config.max_tried
            )));
        }
        Ok(())
    }

    fn context<'a>(&self, request: &'a DiagnoseRequest) -> Context<'a> {
        Context::new(
            Phase::try_from(request.phase).unwrap_or(Phase::Unspecified),
            request.exit_code,
            &request.component,
            request.plan.as_ref(),
            request
                .environment
                .as_ref()
                .map(|e| e.toolchains.as_slice())
                .unwrap_or_default(),
            &request.log_tail,
            self.config.max_log_lines,
            self.config.max_line_bytes,
        )
        .with_packages(&request.packages)
    }
}

/// Whether two patches make the same change to the same component. Values
/// that are generated (secrets) or explanatory (reasons) do not count: a
/// variable set once is not set again, a file created once is not recreated.
pub fn same_change(a: &PlanPatch, b: &PlanPatch) -> bool {
    let component = a.component == b.component || a.component.is_empty() || b.component.is_empty();
    let change = match (&a.change, &b.change) {
        (Some(Change::AddPackage(x)), Some(Change::AddPackage(y))) => {
            x.name.eq_ignore_ascii_case(&y.name) && x.version_spec == y.version_spec
        }
        (Some(Change::SetEnvVar(x)), Some(Change::SetEnvVar(y))) => x.name == y.name,
        (Some(Change::SetPort(x)), Some(Change::SetPort(y))) => x.port == y.port,
        (Some(Change::SetRuntimeVersion(x)), Some(Change::SetRuntimeVersion(y))) => x.version == y.version,
        (Some(Change::ReplaceCommand(x)), Some(Change::ReplaceCommand(y))) => {
            x.slot == y.slot
                && x.command.as_ref().map(|c| c.run.trim()) == y.command.as_ref().map(|c| c.run.trim())
        }
        (Some(Change::AddBackingService(x)), Some(Change::AddBackingService(y))) => {
            x.service.as_ref().map(|s| s.kind) == y.service.as_ref().map(|s| s.kind)
        }
        (Some(Change::AddSetupCommand(x)), Some(Change::AddSetupCommand(y))) => {
            x.command.as_ref().map(|c| c.run.trim()) == y.command.as_ref().map(|c| c.run.trim())
        }
        (Some(Change::RelaxPin(x)), Some(Change::RelaxPin(y))) => {
            x.package.eq_ignore_ascii_case(&y.package) && x.to_spec == y.to_spec
        }
        (Some(Change::CreateFile(x)), Some(Change::CreateFile(y))) => x.path == y.path,
        _ => false,
    };
    component && change
}

/// Drops the patches already tried or unsafe; a diagnosis left without
/// patches says so.
fn filter(diagnosis: &mut Diagnosis, tried: &[PlanPatch]) {
    let before = diagnosis.patches.len();
    diagnosis
        .patches
        .retain(|p| !tried.iter().any(|t| same_change(p, t)));
    let was_tried = before - diagnosis.patches.len();
    diagnosis.patches.retain(|p| match safety::check(p) {
        Ok(()) => true,
        Err(refusal) => {
            tracing::warn!(cause = %diagnosis.cause, %refusal, "rule patch refused by the safety filter");
            false
        }
    });
    if was_tried > 0 && diagnosis.patches.is_empty() {
        diagnosis.summary.push_str(" (the known fix was already tried)");
        diagnosis.confidence = diagnosis.confidence.min(0.5);
    }
}

impl Resolver for RuleResolver {
    async fn diagnose(&self, request: DiagnoseRequest) -> Result<DiagnoseResponse> {
        let span = tracing::info_span!(
            "diagnose",
            component = %request.component,
            phase = request.phase,
            exit_code = request.exit_code
        );
        self.diagnose_in_span(request).instrument(span).await
    }
}

impl RuleResolver {
    async fn diagnose_in_span(&self, request: DiagnoseRequest) -> Result<DiagnoseResponse> {
        self.validate(&request)?;
        let request = Arc::new(request);
        let this = self.clone();
        let shared = request.clone();
        let mut diagnoses = tokio::task::spawn_blocking(move || CATALOG.diagnose(&this.context(&shared)))
            .await
            .map_err(|e| ResolverError::Matcher(e.to_string()))?;
        for diagnosis in &mut diagnoses {
            filter(diagnosis, &request.tried);
        }
        if diagnoses.is_empty()
            && let Some(advisor) = &self.advisor
        {
            let ctx = self.context(&request);
            match advisor.advise(&ctx, &request.tried).await {
                advisor::Advice::Diagnosis {
                    mut diagnosis,
                    refused,
                } => {
                    let outcome = if refused > 0 { "refused" } else { "answered" };
                    ::metrics::counter!(metrics::ADVISOR_CALLS_TOTAL, "outcome" => outcome).increment(1);
                    filter(&mut diagnosis, &request.tried);
                    diagnoses.push(diagnosis);
                }
                advisor::Advice::Nothing(why) => {
                    ::metrics::counter!(metrics::ADVISOR_CALLS_TOTAL, "outcome" => "failed").increment(1);
                    tracing::info!(%why, "advisor gave no diagnosis");
                }
            }
        }
        diagnoses.truncate(self.config.max_diagnoses);
        for d in &diagnoses {
            let (cause, source) = if d.source == DiagnosisSource::Llm as i32 {
                ("llm".to_owned(), "llm")
            } else {
                (d.cause.clone(), "rule")
            };
            ::metrics::counter!(metrics::DIAGNOSES_TOTAL, "cause" => cause, "source" => source).increment(1);
        }
        tracing::info!(
            causes = ?diagnoses.iter().map(|d| d.cause.as_str()).collect::<Vec<_>>(),
            "diagnosed"
        );
        Ok(DiagnoseResponse { diagnoses })
    }
}

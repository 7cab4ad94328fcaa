//! The words a person reads for the contract's enums (`fetch`, `finished`,
//! `healthy`): what the CLI prints and what messages say. The JSON mapping
//! keeps the enum names (`STEP_FETCH`).

use crate::orchestrator::v1::{ComponentHealth, Step, StepStatus};

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Self::Fetch => "fetch",
            Self::Detect => "detect",
            Self::Analyze => "analyze",
            Self::Index => "index",
            Self::Provision => "provision",
            Self::Install => "install",
            Self::Build => "build",
            Self::Setup => "setup",
            Self::Start => "start",
            Self::Probe => "probe",
            Self::Test => "test",
            Self::Monitor => "monitor",
            Self::Unspecified => "unknown",
        }
    }
}

impl StepStatus {
    pub fn label(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Unspecified => "unknown",
        }
    }
}

impl ComponentHealth {
    pub fn label(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Unprobed => "unprobed",
            Self::Stopped => "stopped",
            Self::Unspecified => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_has_the_word_of_its_name() {
        for value in 1..=12 {
            let step = Step::try_from(value).expect("a step");
            assert_eq!(
                format!("STEP_{}", step.label().to_uppercase()),
                step.as_str_name()
            );
        }
        for value in 1..=4 {
            let status = StepStatus::try_from(value).expect("a status");
            assert_eq!(
                format!("STEP_STATUS_{}", status.label().to_uppercase()),
                status.as_str_name()
            );
        }
        for value in 1..=5 {
            let health = ComponentHealth::try_from(value).expect("a health");
            assert_eq!(
                format!("COMPONENT_HEALTH_{}", health.label().to_uppercase()),
                health.as_str_name()
            );
        }
    }
}

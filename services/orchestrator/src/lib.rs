//! The orchestrator: the single public entry point. It calls one agent per
//! step over health-checked channels (`reporunner-client`).
//!
//! This first slice serves `GetEnvironment` and `GetRecommendations` through
//! the env-detector agent. The run pipeline, search and authentication arrive
//! with their own services.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod grpc;
mod service;

pub use config::OrchestratorConfig;
pub use error::{OrchestratorError, Result};
pub use service::{Agents, Orchestrator, OrchestratorImpl};

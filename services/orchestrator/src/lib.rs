//! The orchestrator: the single public entry point. It drives each run
//! through its goal's list of steps ([`run`]: read `run/mod.rs` first),
//! calling the agents through typed clients ([`clients`]) over
//! health-checked channels (`reporunner-client`), and keeps runs and their
//! events in a [`RunStore`] (sea-orm on SQLite or PostgreSQL). Plugins are
//! called at hooks between the steps ([`plugins`]).
//!
//! Served: `GetEnvironment` and `GetRecommendations` (env-detector), and the
//! run lifecycle: `CreateRun` (fetch → detect → analyze, then for goal START
//! install → build → start → probe → RUNNING, for goal TEST install → build
//! → test (tester agent), for START_AND_TEST both, staying RUNNING with the
//! test results; in a background task), `GetRun`, `ListRuns`, `WatchRun`
//! (replay, then follow, without gaps or duplicates), `StopRun` (stops every
//! process of the run) and `GetRunLogs`; `IndexWorkspace` and `Search` through the indexer
//! service, the mode decided by the caller's tier (see [`index`]), and
//! indexing as an optional step of a run after analysis.
//!
//! Every call arrives through `reporunner-authn`'s layer; handlers read the
//! caller from the request. Another user's run is NOT_FOUND; the admin sees
//! every run.
#![forbid(unsafe_code)]

mod clients;
pub mod config;
mod entity;
pub mod error;
pub mod grpc;
pub mod heal;
pub mod index;
mod lease;
mod live;
pub mod metrics;
mod migration;
pub mod plugins;
pub mod run;
mod service;
pub mod store;

pub use config::{OrchestratorConfig, PluginConfig};
pub use error::{OrchestratorError, Result};
pub use run::{Step, explain, steps_for};
pub use service::{Agents, Orchestrator, OrchestratorImpl, RunEvents};
pub use store::RunStore;

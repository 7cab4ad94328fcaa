//! The `reporunner` binary as a library: the CLI's commands and renderers.
//! Nodes (any set of services in one process) and their settings come from
//! `reporunner-node`, which the test sandbox (`tests/`) uses too.
#![forbid(unsafe_code)]

pub mod account;
pub mod analyze;
pub mod credentials;
pub mod dashboard;
pub mod errors;
pub mod output;
pub mod owner;
pub mod run;
pub mod search;
pub mod session;
pub mod stdout;
pub mod ui;

pub use reporunner_node::{Node, ServiceName, Settings, start_node};

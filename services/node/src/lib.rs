//! The composition root: a node hosts any set of Repo Runner services in one
//! process and reaches the others through the shared client stack. The
//! `reporunner` binary (`serve`, the embedded `run`) and the test sandbox
//! (`tests/`) start nodes through this crate, so tests wire the mesh exactly
//! as production does.
#![forbid(unsafe_code)]

pub mod node;
pub mod services;
pub mod settings;

pub use node::{NOT_OVER_HTTP, Node, NodeOptions, start_node, start_node_with};
pub use services::{ServiceName, open_auth};
pub use settings::Settings;

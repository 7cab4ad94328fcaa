//! The `reporunner` binary as a library: settings, the node that hosts any
//! set of services in one process, and the CLI's renderers. The test sandbox
//! (`tests/`) starts nodes through the same code as `reporunner serve`.
#![forbid(unsafe_code)]

pub mod account;
pub mod analyze;
pub mod credentials;
pub mod node;
pub mod output;
pub mod run;
pub mod search;
pub mod session;
pub mod settings;

pub use node::{Node, ServiceName, start_node};
pub use settings::Settings;

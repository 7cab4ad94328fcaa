//! Every Repo Runner contract, generated from `proto/` at build time.
//!
//! - [`common`], [`auth`], [`index`], [`orchestrator`] and [`agents`] hold the
//!   prost messages and the tonic clients and servers of each package.
//! - [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set of every file, for
//!   server reflection.
//! - [`json`] renders any contract message in the canonical proto3 JSON mapping.
//! - [`descriptor`] answers questions about methods (streaming kind,
//!   idempotency) from the descriptors, so that plumbing never hard-codes them.
#![forbid(unsafe_code)]
#![allow(clippy::all, missing_debug_implementations)]

mod generated {
    include!(concat!(env!("OUT_DIR"), "/reporunner.rs"));
}

pub use generated::reporunner::{agents, auth, common, index, orchestrator};

/// The encoded `FileDescriptorSet` of every contract and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/reporunner_descriptor.bin"));

pub mod descriptor;
pub mod json;
pub mod labels;

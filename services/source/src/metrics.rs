//! The source agent's metrics, every name in one place. Per-RPC counts and
//! latencies come from the server layer (`reporunner_grpc_*`).

use reporunner_error::ServiceError;

use crate::{Fetched, error::Result};

/// Fetches and uploads finished, by `kind` (git, local, upload) and `status`
/// (created, reused, or the gRPC code of the failure).
pub const WORKSPACES_TOTAL: &str = "reporunner_source_workspaces_total";
/// Bytes of file content in workspaces created, by `kind`.
pub const WORKSPACE_BYTES_TOTAL: &str = "reporunner_source_workspace_bytes_total";

/// Describes the metrics to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        WORKSPACES_TOTAL,
        "Source fetches and uploads finished, by kind and status."
    );
    metrics::describe_counter!(
        WORKSPACE_BYTES_TOTAL,
        metrics::Unit::Bytes,
        "Bytes of file content in workspaces created, by kind."
    );
}

/// Counts one finished fetch or upload.
pub(crate) fn record(kind: &'static str, result: &Result<Fetched>) {
    let status = match result {
        Ok(fetched) if fetched.reused => "reused".to_owned(),
        Ok(fetched) => {
            metrics::counter!(WORKSPACE_BYTES_TOTAL, "kind" => kind).increment(fetched.workspace.size_bytes);
            "created".to_owned()
        }
        Err(err) => format!("{:?}", err.kind().code()),
    };
    metrics::counter!(WORKSPACES_TOTAL, "kind" => kind, "status" => status).increment(1);
}

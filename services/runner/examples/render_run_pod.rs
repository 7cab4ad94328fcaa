//! Prints the Pod and NetworkPolicy the Kubernetes backend creates for a
//! typical start (a web component with tier limits), as one JSON list, so
//! that `tests/python/test_manifests.py` can validate them against the
//! Kubernetes schemas offline. The objects come from the same functions the
//! backend calls at run time.
//!
//! `cargo run -p reporunner-runner --example render_run_pod`
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, path::PathBuf};

use reporunner_runner::{
    RunnerConfig,
    backend::{LaunchSpec, Limits, kubernetes},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = RunnerConfig::default().resolve(std::path::Path::new("/var/lib/reporunner"));
    config.kubernetes.namespace = "reporunner".into();
    config.kubernetes.egress_cidrs = vec!["0.0.0.0/0".into()];
    let spec = LaunchSpec {
        process_id: "proc-0123456789abcdef0123456789abcdef".into(),
        run_id: "run-0a1b2c".into(),
        component: "web".into(),
        command: "python -m flask run --port 8000".into(),
        workspace: PathBuf::from("/var/lib/reporunner/workspaces/alice/sha256-3c28"),
        working_dir: PathBuf::from("/var/lib/reporunner/workspaces/alice/sha256-3c28"),
        env: BTreeMap::from([
            ("PORT".into(), "8000".into()),
            ("PYTHONUNBUFFERED".into(), "1".into()),
        ]),
        limits: Limits {
            max_file_bytes: 0,
            memory_bytes: 1 << 30,
            cpu_millis: 1000,
            max_processes: 256,
            max_open_files: 4096,
            max_runtime_seconds: 7200,
        },
        tmp_dir: PathBuf::from("/var/lib/reporunner/runner/tmp/run-0a1b2c"),
        owner: None,
    };
    let name = kubernetes::pod_name(&spec.process_id);
    let pod = kubernetes::pod(&spec, &config, &name)?;
    let policy = kubernetes::network_policy(&spec, &config.kubernetes, &name);
    let objects = vec![serde_json::to_value(pod)?, serde_json::to_value(policy)?];
    println!("{}", serde_json::to_string_pretty(&objects)?);
    Ok(())
}

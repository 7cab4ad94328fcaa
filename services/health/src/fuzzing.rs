//! Entry points of the fuzz targets in `fuzz/` and of their corpus replay in
//! `tests/fuzz_replay.rs`: each takes arbitrary bytes, runs the code a
//! request runs, and panics only on a bug.

use std::sync::LazyLock;

use prost::Message;
use reporunner_proto::agents::health::v1::{ProbeRequest, WatchRequest};

use crate::{HealthAgent, config::HealthConfig, probe::Probe};

/// The agent as configured by default, without a runner (log probes are
/// checked, then refused).
static AGENT: LazyLock<HealthAgent> = LazyLock::new(|| {
    HealthAgent::new(HealthConfig::default(), None).expect("the default settings are valid")
});

fn check_probes(accepted: &[Probe], asked: usize, config: &HealthConfig) {
    assert_eq!(accepted.len(), asked, "probes were dropped or added");
    assert!(accepted.len() <= config.max_probes);
    for probe in accepted {
        assert!(
            probe.timeout <= config.max_timeout,
            "a probe waits {:?}",
            probe.timeout
        );
    }
}

/// Decodes `data` as a `ProbeRequest` (first byte even) or a `WatchRequest`
/// (odd) and runs the agent's checks of its probes (URLs, hosts, ports,
/// log patterns compiled as a bounded regex set) and of the watch's bounds.
pub fn validate_request(data: &[u8]) {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let agent = &*AGENT;
    if selector % 2 == 0 {
        let Ok(request) = ProbeRequest::decode(message) else {
            return;
        };
        if let Ok(probes) = agent.validate(&request.probes) {
            check_probes(&probes, request.probes.len(), &agent.config);
        }
    } else {
        let Ok(request) = WatchRequest::decode(message) else {
            return;
        };
        if let Ok(watch) = agent.validate_watch(&request) {
            check_probes(&watch.probes, request.probes.len(), &agent.config);
            assert!(watch.startup_grace <= agent.config.max_startup_grace);
            assert!(watch.interval >= agent.config.min_interval);
            assert!(watch.failure_threshold >= 1);
        }
    }
}

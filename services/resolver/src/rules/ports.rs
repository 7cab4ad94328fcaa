//! Ports: the component's port is taken.

use reporunner_proto::agents::resolver::v1::Phase;

use super::{Context, Finding, Hit, Rule};

pub(super) fn rules() -> Vec<Rule> {
    vec![Rule {
        cause: "port.in_use",
        pattern: r"(?i)EADDRINUSE(?:.*?:(?P<a>[0-9]{2,5})\b)?|address already in use(?:.*?:(?P<b>[0-9]{2,5})\b)?|port is already allocated|Port (?P<c>[0-9]{2,5}) is (?:already )?in use|Errno 98|Errno 48",
        rank: 70,
        confidence: 0.9,
        phases: &[
            Phase::Start,
            Phase::Probe,
            Phase::Test,
            Phase::Setup,
            Phase::Unspecified,
        ],
        check: in_use,
    }]
}

fn in_use(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let port = [hit.get("a"), hit.get("b"), hit.get("c")]
        .into_iter()
        .find(|p| !p.is_empty())
        .map(str::to_owned)
        .or_else(|| ctx.component.filter(|c| c.port != 0).map(|c| c.port.to_string()));
    let summary = match &port {
        Some(p) => format!("port {p} is already in use by another process"),
        None => "the component's port is already in use by another process".to_owned(),
    };
    Some(Finding::new(summary).patch(ctx.set_port(0, "port 0: the runner picks a free port")))
}

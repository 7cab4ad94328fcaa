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
    // A program that reads its port from a variable other than PORT (found
    // by the analyzer, with the taken port as its default) only moves when
    // the runner passes the new port under that name.
    let via = ctx.component.and_then(|c| {
        let taken = port.as_deref().unwrap_or_default();
        let mut vars = c.env.iter().filter(|v| {
            v.name.ends_with("_PORT") && (v.default_value == taken || v.default_value.is_empty())
        });
        let first = vars.next()?;
        // Two candidates: no way to tell which one is the listener.
        vars.next().is_none().then_some(first)
    });
    let patch = match via {
        Some(var) if c_binding_is_default(ctx) => ctx.set_port_via(
            0,
            &format!("env:{}", var.name),
            format!(
                "port 0: the runner picks a free port and passes it as {} (read at {})",
                var.name,
                if var.source.is_empty() {
                    "the plan"
                } else {
                    var.source.as_str()
                }
            ),
        ),
        _ => ctx.set_port(0, "port 0: the runner picks a free port"),
    };
    Some(Finding::new(summary).patch(patch))
}

/// Whether the component relies on `port` alone (no binding of its own).
fn c_binding_is_default(ctx: &Context<'_>) -> bool {
    ctx.component.is_none_or(|c| c.port_binding.trim().is_empty())
}

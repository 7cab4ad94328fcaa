//! Downloads from a host other than the package registries (a git
//! dependency on GitHub, fonts inlined at build time, a binary a package
//! fetches when it installs, a model at start-up) that the host running the
//! repository cannot reach. Nothing here can be patched: the finding names
//! the host, so that the run ends saying what it needs instead of with the
//! tool's last lines.

use reporunner_proto::agents::resolver::v1::Phase;

use super::{Context, Finding, Hit, Rule};

/// The registries the dependency agent installs from: an outage of one of
/// them is not the repository needing another host.
const REGISTRIES: &[&str] = &[
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "pypi.org",
    "files.pythonhosted.org",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "proxy.golang.org",
    "deb.debian.org",
];

/// A host name (at least one dot) as a regex group, `host`.
macro_rules! host {
    () => {
        r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+)"
    };
}

pub(super) fn rules() -> Vec<Rule> {
    // The phases in which the repository's own steps download: a start may
    // fetch a model, a build may inline fonts.
    const PHASES: &[Phase] = &[Phase::Install, Phase::Build, Phase::Setup, Phase::Start];
    vec![
        Rule {
            cause: "net.host_unreachable",
            // npm and Node (`getaddrinfo ENOTFOUND`), curl and git (`Could
            // not resolve host`), Go (`dial tcp: lookup`), urllib3
            // (`HTTPSConnectionPool(host=...)` failing to connect).
            pattern: concat!(
                r"(?:getaddrinfo (?:ENOTFOUND|EAI_AGAIN) |Could not resolve host: |dial tcp: lookup |HTTPS?ConnectionPool\(host=')",
                host!()
            ),
            rank: 55,
            confidence: 0.8,
            phases: PHASES,
            check: unreachable,
        },
        Rule {
            cause: "net.host_unreachable",
            // uv and pip on a git or URL requirement, cargo on a git
            // dependency, Angular's font inlining: the URL of what failed.
            pattern: concat!(
                r"(?i)(?:failed to (?:download|fetch|clone|build)|error has occurred while retrieving|unable to (?:access|download)|could not (?:download|fetch|clone))\b",
                r".*?(?:git\+)?(?:https?|ssh|git)://(?:[^@/\s`']+@)?",
                host!()
            ),
            rank: 54,
            confidence: 0.7,
            phases: PHASES,
            check: unreachable_url,
        },
    ]
}

fn is_registry(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    REGISTRIES.contains(&host.as_str())
}

fn what(ctx: &Context<'_>) -> &'static str {
    match ctx.phase {
        Phase::Install => "the install",
        Phase::Build => "the build",
        Phase::Setup => "a setup command",
        Phase::Start => "the program, when it starts,",
        _ => "the step",
    }
}

fn finding(ctx: &Context<'_>, host: &str) -> Option<Finding> {
    if host.is_empty() || is_registry(host) {
        return None;
    }
    Some(Finding::new(format!(
        "{} needs {host}, which this host cannot reach: only the package registries are reachable from \
         here, so what it downloads from {host} (a git dependency, a binary, fonts, a model) cannot be fetched; \
         vendor it or depend on a registry release instead",
        what(ctx)
    )))
}

fn unreachable(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    finding(ctx, hit.get("host"))
}

/// A failed download of a URL is the host being unreachable only when the
/// log says the network failed; else it is some other failure of that
/// dependency (a bad ref, a build error) that other rules tell.
fn unreachable_url(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let network = ctx.lines.iter().any(|line| {
        let lower = line.to_ascii_lowercase();
        [
            "failed to lookup address",
            "could not resolve host",
            "name or service not known",
            "temporary failure in name resolution",
            "enotfound",
            "eai_again",
            "network is unreachable",
            "connection refused",
            "connection timed out",
            "dns error",
            "getaddrinfo",
            "failed to connect to",
        ]
        .iter()
        .any(|needle| lower.contains(needle))
    });
    if !network {
        return None;
    }
    finding(ctx, hit.get("host"))
}

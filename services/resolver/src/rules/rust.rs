//! Rust: a toolchain too old for the edition or a dependency's MSRV, and
//! crates that link system libraries.

use super::{Context, Finding, Hit, Rule, lazy_regex};
use crate::versions::{Version, rusts};

pub(super) fn rules() -> Vec<Rule> {
    vec![
        Rule {
            cause: "rust.toolchain_too_old",
            pattern: r"feature `edition(?P<edition>20[0-9][0-9])` is required",
            rank: 85,
            confidence: 0.95,
            phases: &[],
            check: too_old,
        },
        Rule {
            cause: "rust.toolchain_too_old",
            pattern: r"requires rustc (?P<need>[0-9]+\.[0-9]+(?:\.[0-9]+)?)(?: or newer|\b)",
            rank: 84,
            confidence: 0.9,
            phases: &[],
            check: too_old,
        },
        Rule {
            cause: "rust.toolchain_too_old",
            pattern: r"rustc (?P<cur>[0-9]+\.[0-9]+(?:\.[0-9]+)?) is not supported by the following packages?",
            rank: 84,
            confidence: 0.9,
            phases: &[],
            check: too_old,
        },
        Rule {
            cause: "rust.openssl_sys",
            pattern: r"Could not find directory of OpenSSL installation|failed to run custom build command for `openssl-sys",
            rank: 75,
            confidence: 0.85,
            phases: &[],
            check: openssl_sys,
        },
    ]
}

lazy_regex!(
    ACTIVE,
    r"currently active rustc version is (?P<cur>[0-9]+\.[0-9]+(?:\.[0-9]+)?)"
);
lazy_regex!(NEEDS, r"requires rustc (?P<need>[0-9]+\.[0-9]+(?:\.[0-9]+)?)");

fn too_old(ctx: &Context<'_>, hit: &Hit<'_>) -> Option<Finding> {
    let need = match (hit.get("edition"), hit.get("need")) {
        ("2024", _) => Version(1, 85, 0),
        ("2021", _) => Version(1, 56, 0),
        (_, "") => ctx
            .find(&NEEDS)
            .and_then(|c| c.name("need").and_then(|m| Version::parse(m.as_str())))?,
        (_, need) => Version::parse(need)?,
    };
    let current = match hit.get("cur") {
        "" => ctx
            .find(&ACTIVE)
            .and_then(|c| c.name("cur").and_then(|m| Version::parse(m.as_str()))),
        cur => Version::parse(cur),
    };
    let what = match hit.get("edition") {
        "" => format!("rustc {}.{} or newer", need.0, need.1),
        edition => format!("the {edition} edition (rustc {}.{}+)", need.0, need.1),
    };
    let summary = match current {
        Some(c) => format!("the build needs {what}; the active toolchain is {c}"),
        None => format!("the build needs {what}; the active toolchain is older"),
    };
    let choice = rusts(ctx.toolchains)
        .into_iter()
        .find(|t| t.version >= need && Some(t.version) != current);
    Some(match choice {
        Some(t) => {
            let version = t.version.to_string();
            let reason = format!("rustc {version} is installed and is new enough");
            Finding::new(summary)
                .patch(ctx.set_runtime(&version, reason.clone()))
                .patch(ctx.set_env("RUSTUP_TOOLCHAIN", &version, reason))
        }
        None => Finding::new(format!("{summary}; no installed toolchain is new enough")).confidence(0.6),
    })
}

fn openssl_sys(_: &Context<'_>, _: &Hit<'_>) -> Option<Finding> {
    Some(Finding::new(
        "openssl-sys needs the OpenSSL headers and pkg-config (Debian packages libssl-dev and pkg-config)",
    ))
}

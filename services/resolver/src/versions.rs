//! Just enough version arithmetic to pick an installed runtime: numeric
//! versions and the constraint syntaxes of pip (`>=3.8,<3.11`, `~=3.9`,
//! `==3.10.*`), npm (`>=14 <17`, `^18`, `16.x || 18.x`) and cargo
//! (`1.80`).

use reporunner_proto::common::v1::Toolchain;

/// A numeric version; missing parts are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    /// Parses the leading numeric part, e.g. "3.11.7", "v18.19.0", "1.80".
    pub fn parse(text: &str) -> Option<Self> {
        let (version, _) = parse_parts(text)?;
        Some(version)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The version and how many parts were written (a `*`/`x` part ends it).
fn parse_parts(text: &str) -> Option<(Version, usize)> {
    let text = text.trim().trim_start_matches(['v', 'V']);
    let mut parts = [0u64; 3];
    let mut given = 0;
    for piece in text.split('.').take(3) {
        let digits: String = piece.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            break;
        }
        parts[given] = digits.parse().ok()?;
        given += 1;
        if digits.len() != piece.len() {
            break;
        }
    }
    (given > 0).then_some((Version(parts[0], parts[1], parts[2]), given))
}

/// The smallest version above every version with the first `given` parts of `v`.
fn bump(v: Version, given: usize) -> Version {
    match given {
        1 => Version(v.0.saturating_add(1), 0, 0),
        2 => Version(v.0, v.1.saturating_add(1), 0),
        _ => Version(v.0, v.1, v.2.saturating_add(1)),
    }
}

#[derive(Clone, Copy, Debug)]
enum Bound {
    AtLeast(Version),
    Above(Version),
    Below(Version),
    AtMost(Version),
    Not(Version, Version),
}

impl Bound {
    fn allows(self, v: Version) -> bool {
        match self {
            Self::AtLeast(b) => v >= b,
            Self::Above(b) => v > b,
            Self::Below(b) => v < b,
            Self::AtMost(b) => v <= b,
            Self::Not(low, high) => v < low || v >= high,
        }
    }
}

/// A constraint: alternatives (`||`) of conjunctions.
#[derive(Clone, Debug)]
pub struct Constraint(Vec<Vec<Bound>>);

impl Constraint {
    /// Parses a constraint; `None` when nothing in it is understood.
    pub fn parse(text: &str) -> Option<Self> {
        let mut alternatives = Vec::new();
        for alternative in text.split("||").take(16) {
            let mut bounds = Vec::new();
            // ">= 20" is one item; "  >=14 <17" and ">=3.8, <3.11" are two.
            let mut normalised = String::new();
            for c in alternative.trim().chars() {
                let after_op = normalised.ends_with(['<', '>', '=', '~', '^', '!']);
                match c {
                    ' ' | '\t' if after_op || normalised.ends_with(',') => {}
                    ' ' | '\t' => normalised.push(','),
                    c => normalised.push(c),
                }
            }
            for item in normalised.split(',').filter(|s| !s.trim().is_empty()).take(16) {
                bounds.extend(parse_item(item.trim())?);
            }
            if !bounds.is_empty() {
                alternatives.push(bounds);
            }
        }
        (!alternatives.is_empty()).then_some(Self(alternatives))
    }

    pub fn allows(&self, v: Version) -> bool {
        self.0.iter().any(|all| all.iter().all(|b| b.allows(v)))
    }
}

fn parse_item(item: &str) -> Option<Vec<Bound>> {
    let ops = ["~=", ">=", "<=", "==", "!=", ">", "<", "=", "^", "~"];
    let op = ops
        .iter()
        .find(|op| item.starts_with(**op))
        .copied()
        .unwrap_or("");
    let (v, given) = parse_parts(&item[op.len()..])?;
    let bounds = match op {
        ">=" => vec![Bound::AtLeast(v)],
        ">" => vec![Bound::Above(v)],
        "<" => vec![Bound::Below(v)],
        "<=" => vec![Bound::AtMost(v)],
        "!=" => vec![Bound::Not(v, bump(v, given))],
        // PEP 440 compatible release: ~=3.9 is >=3.9,<4; ~=3.9.1 is >=3.9.1,<3.10.
        "~=" => vec![
            Bound::AtLeast(v),
            Bound::Below(bump(v, given.saturating_sub(1).max(1))),
        ],
        "^" => {
            let high = if v.0 > 0 || given == 1 {
                bump(v, 1)
            } else {
                bump(v, 2)
            };
            vec![Bound::AtLeast(v), Bound::Below(high)]
        }
        "~" => vec![Bound::AtLeast(v), Bound::Below(bump(v, given.min(2)))],
        // "==", "=", or a bare version / x-range: a prefix match.
        _ => vec![Bound::AtLeast(v), Bound::Below(bump(v, given))],
    };
    Some(bounds)
}

/// An installed runtime: its version and the toolchain it came from.
#[derive(Clone, Debug)]
pub struct Installed<'a> {
    pub version: Version,
    pub toolchain: &'a Toolchain,
}

/// Installed toolchains whose name is one of `names` or starts with one of
/// `prefixes`, newest first.
pub fn installed<'a>(toolchains: &'a [Toolchain], names: &[&str], prefixes: &[&str]) -> Vec<Installed<'a>> {
    let mut found: Vec<Installed<'a>> = toolchains
        .iter()
        .filter(|t| names.contains(&t.name.as_str()) || prefixes.iter().any(|p| t.name.starts_with(p)))
        .filter_map(|t| {
            Some(Installed {
                version: Version::parse(&t.version)?,
                toolchain: t,
            })
        })
        .collect();
    found.sort_by_key(|i| std::cmp::Reverse(i.version));
    found.dedup_by(|a, b| a.version == b.version);
    found
}

/// Installed Python interpreters, newest first.
pub fn pythons(toolchains: &[Toolchain]) -> Vec<Installed<'_>> {
    installed(toolchains, &["python3", "python"], &["python3."])
}

/// Installed Node.js runtimes, newest first.
pub fn nodes(toolchains: &[Toolchain]) -> Vec<Installed<'_>> {
    installed(toolchains, &["node", "nodejs"], &["node-", "node@"])
}

/// Installed Rust toolchains, newest first.
pub fn rusts(toolchains: &[Toolchain]) -> Vec<Installed<'_>> {
    installed(toolchains, &["rustc", "cargo"], &["rustc-", "rustc@"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(constraint: &str, version: &str) -> bool {
        Constraint::parse(constraint)
            .expect("parses")
            .allows(Version::parse(version).expect("version"))
    }

    #[test]
    fn pip_npm_and_cargo_constraints() {
        assert!(allows(">=3.8,<3.11", "3.10.4"));
        assert!(!allows(">=3.8,<3.11", "3.12.1"));
        assert!(allows("~=3.9", "3.11.0"));
        assert!(!allows("~=3.9.1", "3.10.0"));
        assert!(allows("==3.10.*", "3.10.9"));
        assert!(!allows("!=3.9.*,>=3.8", "3.9.2"));
        assert!(allows(">=14 <17", "16.20.2"));
        assert!(!allows(">=14 <17", "18.19.0"));
        assert!(allows("^18", "18.19.0"));
        assert!(!allows("^18.17.0", "20.1.0"));
        assert!(allows("16.x || 18.x", "18.2.0"));
        assert!(allows("~16.3", "16.3.9"));
        assert!(!allows("~16.3", "16.4.0"));
        assert!(allows(">= 20.0.0", "20.11.1"));
        assert!(Constraint::parse("latest").is_none());
        // The largest version saturates instead of overflowing.
        assert!(!allows("^18446744073709551615", "1.0.0"));
    }
}

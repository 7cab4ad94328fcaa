//! Names of tiers, index modes and usage kinds as they appear in config files
//! and in the database ("free", "vector", "metered_request").

use reporunner_proto::{
    auth::v1::UsageKind,
    common::v1::{IndexMode, Tier},
};

/// Every tier a user can hold, lowest first.
pub const ALL_TIERS: [Tier; 5] = [
    Tier::Free,
    Tier::Tester,
    Tier::Advanced,
    Tier::Premium,
    Tier::Admin,
];

/// The lowercase name of a tier ("free"); "unspecified" for the zero value.
pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Unspecified => "unspecified",
        Tier::Free => "free",
        Tier::Tester => "tester",
        Tier::Advanced => "advanced",
        Tier::Premium => "premium",
        Tier::Admin => "admin",
    }
}

/// Parses a tier name; the zero value is not a tier a user can hold.
pub fn parse_tier(name: &str) -> Option<Tier> {
    ALL_TIERS.into_iter().find(|t| tier_name(*t) == name)
}

/// The lowercase name of an index mode ("text").
pub fn index_mode_name(mode: IndexMode) -> &'static str {
    match mode {
        IndexMode::Unspecified => "unspecified",
        IndexMode::Text => "text",
        IndexMode::Vector => "vector",
        IndexMode::Hybrid => "hybrid",
    }
}

/// Parses an index mode name.
pub fn parse_index_mode(name: &str) -> Option<IndexMode> {
    [IndexMode::Text, IndexMode::Vector, IndexMode::Hybrid]
        .into_iter()
        .find(|m| index_mode_name(*m) == name)
}

/// The stored name of a usage kind ("metered_request").
pub fn usage_kind_name(kind: UsageKind) -> &'static str {
    match kind {
        UsageKind::Unspecified => "unspecified",
        UsageKind::MeteredRequest => "metered_request",
        UsageKind::RunCreated => "run_created",
        UsageKind::AgentCall => "agent_call",
        UsageKind::Search => "search",
        UsageKind::Index => "index",
    }
}

/// Parses a stored usage kind name.
pub fn parse_usage_kind(name: &str) -> Option<UsageKind> {
    [
        UsageKind::MeteredRequest,
        UsageKind::RunCreated,
        UsageKind::AgentCall,
        UsageKind::Search,
        UsageKind::Index,
    ]
    .into_iter()
    .find(|k| usage_kind_name(*k) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for tier in ALL_TIERS {
            assert_eq!(parse_tier(tier_name(tier)), Some(tier));
        }
        assert_eq!(parse_tier("unspecified"), None);
        assert_eq!(parse_tier("Free"), None);
        for mode in [IndexMode::Text, IndexMode::Vector, IndexMode::Hybrid] {
            assert_eq!(parse_index_mode(index_mode_name(mode)), Some(mode));
        }
        assert_eq!(parse_usage_kind("search"), Some(UsageKind::Search));
        assert_eq!(parse_usage_kind("unspecified"), None);
    }
}

//! Tier policy as pure functions of the auth service's data.
//!
//! - [`tier_label`]: a tier's name as messages show it.
//! - [`policy`]: which index mode serves a search ([`policy::choose_mode`]).
//! - [`TierError`]: what a policy refuses.
#![forbid(unsafe_code)]

pub mod policy;

use reporunner_proto::common::v1::Tier;

/// What a tier policy refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TierError {
    /// The caller's tier does not allow what it asked for; the message
    /// names the lowest tier that does, when one does.
    #[error("{0}")]
    PermissionDenied(String),
}

pub type Result<T, E = TierError> = std::result::Result<T, E>;

/// The name of `tier` (a `reporunner.common.v1.Tier` number) in messages:
/// "Free", "Tester", "Advanced", "Premium", "Admin"; "unknown" for the zero
/// value and for numbers no tier has.
pub fn tier_label(tier: i32) -> &'static str {
    match Tier::try_from(tier).unwrap_or(Tier::Unspecified) {
        Tier::Unspecified => "unknown",
        Tier::Free => "Free",
        Tier::Tester => "Tester",
        Tier::Advanced => "Advanced",
        Tier::Premium => "Premium",
        Tier::Admin => "Admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_named_for_people() {
        assert_eq!(tier_label(Tier::Free as i32), "Free");
        assert_eq!(tier_label(Tier::Tester as i32), "Tester");
        assert_eq!(tier_label(Tier::Advanced as i32), "Advanced");
        assert_eq!(tier_label(Tier::Premium as i32), "Premium");
        assert_eq!(tier_label(Tier::Admin as i32), "Admin");
        assert_eq!(tier_label(Tier::Unspecified as i32), "unknown");
        assert_eq!(tier_label(99), "unknown");
    }
}

//! Which index mode serves a search: the caller's tier policy (data from the
//! auth service, `reporunner.auth.v1.TierPolicy`), the env-detector's
//! recommendation and whether an embedding model is installed. A pure
//! function, called by the orchestrator before it asks the indexer (and
//! re-exported by the indexer as its `policy` module).
//!
//! - A tier whose policy lacks the mode gets text with a fallback reason, or
//!   PERMISSION_DENIED naming the lowest tier that allows it when `strict`.
//! - A tier whose policy allows vectors only when recommended
//!   (`vector_needs_recommendation`, Advanced by default) gets vectors only
//!   when the env-detector recommends them.
//! - Hybrid asked of a tier that has vectors but not hybrid becomes vector.
//! - No model installed: text with the reason, for every tier.
//! - `INDEX_MODE_UNSPECIFIED` asks for the best mode the tier allows.

use reporunner_proto::{auth::v1::TierPolicy, common::v1::IndexMode};

use crate::{Result, TierError, tier_label};

/// What [`choose_mode`] decides from.
#[derive(Clone, Copy, Debug)]
pub struct ModeInputs<'a> {
    /// The mode asked for (`Unspecified` asks for the best allowed).
    pub requested: IndexMode,
    /// The caller's tier policy.
    pub policy: &'a TierPolicy,
    /// Every tier's policy, to name the lowest tier that allows a mode.
    pub tiers: &'a [TierPolicy],
    /// The env-detector recommends a vector index on this host.
    pub env_recommends_vector: bool,
    /// The embedding model is installed.
    pub model_present: bool,
    /// Refuse (PERMISSION_DENIED) instead of falling back when the tier
    /// does not allow the requested mode.
    pub strict: bool,
}

/// The mode that serves, and why it differs from the one asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeChoice {
    pub mode: IndexMode,
    /// Empty when the served mode is the one asked for.
    pub fallback_reason: String,
}

fn has(policy: &TierPolicy, mode: IndexMode) -> bool {
    policy.index_modes.contains(&(mode as i32))
}

/// Whether `policy` allows `mode` given the recommendation.
fn allows(policy: &TierPolicy, mode: IndexMode, recommended: bool) -> bool {
    match mode {
        IndexMode::Text => true,
        IndexMode::Vector | IndexMode::Hybrid => {
            has(policy, mode) && (recommended || !policy.vector_needs_recommendation)
        }
        IndexMode::Unspecified => false,
    }
}

fn mode_label(mode: IndexMode) -> &'static str {
    match mode {
        IndexMode::Unspecified | IndexMode::Text => "text search",
        IndexMode::Vector => "vector search",
        IndexMode::Hybrid => "hybrid search",
    }
}

/// The lowest tier whose policy allows `mode` on this host (given the
/// env-detector's recommendation).
fn lowest_tier_allowing(tiers: &[TierPolicy], mode: IndexMode, recommended: bool) -> Option<i32> {
    tiers
        .iter()
        .filter(|p| allows(p, mode, recommended))
        .map(|p| p.tier)
        .min()
}

/// See the module docs.
pub fn choose_mode(inputs: ModeInputs<'_>) -> Result<ModeChoice> {
    let ModeInputs {
        requested,
        policy,
        tiers,
        env_recommends_vector: recommended,
        model_present,
        strict,
    } = inputs;
    let tier = tier_label(policy.tier);
    let served = |mode: IndexMode, reason: String| ModeChoice {
        mode,
        fallback_reason: reason,
    };

    // What the tier grants.
    let (granted, mut reason) = match requested {
        IndexMode::Text => return Ok(served(IndexMode::Text, String::new())),
        IndexMode::Unspecified => {
            let best = [IndexMode::Hybrid, IndexMode::Vector]
                .into_iter()
                .find(|&m| allows(policy, m, recommended))
                .unwrap_or(IndexMode::Text);
            (best, String::new())
        }
        IndexMode::Vector | IndexMode::Hybrid if allows(policy, requested, recommended) => {
            (requested, String::new())
        }
        IndexMode::Vector | IndexMode::Hybrid => {
            let feature = mode_label(requested);
            let in_table = has(policy, requested);
            let why = if in_table {
                // Allowed by the tier, but only where recommended.
                format!(
                    "the {tier} tier allows {feature} only where the env-detector recommends a vector index, and it does not recommend one on this host"
                )
            } else {
                format!("the {tier} tier does not include {feature}")
            };
            let lowest = lowest_tier_allowing(tiers, requested, recommended);
            if strict {
                return Err(TierError::PermissionDenied(match lowest {
                    Some(t) => format!("{feature} needs the {} tier or higher ({why})", tier_label(t)),
                    None => format!("{feature} is not available on any tier ({why})"),
                }));
            }
            let upgrade = lowest.map_or(String::new(), |t| {
                format!("; the {} tier and higher include it", tier_label(t))
            });
            // Hybrid degrades to vector where vectors are allowed.
            if requested == IndexMode::Hybrid && allows(policy, IndexMode::Vector, recommended) {
                (IndexMode::Vector, format!("{why}{upgrade}; served vector search"))
            } else {
                (IndexMode::Text, format!("{why}{upgrade}; served text search"))
            }
        }
    };

    if granted != IndexMode::Text && !model_present {
        reason = format!(
            "no embedding model is installed on this deployment, so {} is not available; served text search",
            mode_label(granted)
        );
        return Ok(served(IndexMode::Text, reason));
    }
    Ok(served(granted, reason))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use reporunner_proto::common::v1::Tier;

    use super::*;

    fn policy(tier: Tier, modes: &[IndexMode], needs_rec: bool) -> TierPolicy {
        TierPolicy {
            tier: tier as i32,
            index_modes: modes.iter().map(|&m| m as i32).collect(),
            vector_needs_recommendation: needs_rec,
            ..TierPolicy::default()
        }
    }

    fn table() -> Vec<TierPolicy> {
        use IndexMode::{Hybrid, Text, Vector};
        vec![
            policy(Tier::Free, &[Text], false),
            policy(Tier::Tester, &[Text], false),
            policy(Tier::Advanced, &[Text, Vector], true),
            policy(Tier::Premium, &[Text, Vector, Hybrid], false),
            policy(Tier::Admin, &[Text, Vector, Hybrid], false),
        ]
    }

    fn choose(
        tier: Tier,
        requested: IndexMode,
        recommended: bool,
        model: bool,
        strict: bool,
    ) -> Result<ModeChoice> {
        let tiers = table();
        let policy = tiers.iter().find(|p| p.tier == tier as i32).unwrap().clone();
        choose_mode(ModeInputs {
            requested,
            policy: &policy,
            tiers: &tiers,
            env_recommends_vector: recommended,
            model_present: model,
            strict,
        })
    }

    use IndexMode::{Hybrid, Text, Unspecified, Vector};

    #[test]
    fn text_is_always_served_as_asked() {
        for tier in [
            Tier::Free,
            Tier::Tester,
            Tier::Advanced,
            Tier::Premium,
            Tier::Admin,
        ] {
            for (rec, model, strict) in [(false, false, true), (true, true, false)] {
                let c = choose(tier, Text, rec, model, strict).unwrap();
                assert_eq!(
                    c,
                    ModeChoice {
                        mode: Text,
                        fallback_reason: String::new()
                    }
                );
            }
        }
    }

    #[test]
    fn free_and_tester_fall_back_to_text_or_are_refused_when_strict() {
        for tier in [Tier::Free, Tier::Tester] {
            for mode in [Vector, Hybrid] {
                let c = choose(tier, mode, true, true, false).unwrap();
                assert_eq!(c.mode, Text);
                assert!(
                    c.fallback_reason.contains("does not include"),
                    "{}",
                    c.fallback_reason
                );
                assert!(c.fallback_reason.contains("served text search"));
                let err = choose(tier, mode, true, true, true).unwrap_err();
                assert!(matches!(err, TierError::PermissionDenied(_)));
                // The host recommends vectors: Advanced allows vector search here.
                let lowest = if mode == Vector { "Advanced" } else { "Premium" };
                assert!(
                    err.to_string().contains(&format!("needs the {lowest} tier")),
                    "{err}"
                );
            }
            let c = choose(tier, Unspecified, true, true, true).unwrap();
            assert_eq!(
                c,
                ModeChoice {
                    mode: Text,
                    fallback_reason: String::new()
                }
            );
        }
    }

    #[test]
    fn advanced_gets_vectors_only_when_recommended() {
        let c = choose(Tier::Advanced, Vector, true, true, false).unwrap();
        assert_eq!(
            c,
            ModeChoice {
                mode: Vector,
                fallback_reason: String::new()
            }
        );
        let c = choose(Tier::Advanced, Vector, false, true, false).unwrap();
        assert_eq!(c.mode, Text);
        assert!(
            c.fallback_reason.contains("does not recommend"),
            "{}",
            c.fallback_reason
        );
        let err = choose(Tier::Advanced, Vector, false, true, true).unwrap_err();
        assert!(err.to_string().contains("needs the Premium tier"), "{err}");
        // Hybrid is not in the Advanced policy: vector where recommended, else text.
        let c = choose(Tier::Advanced, Hybrid, true, true, false).unwrap();
        assert_eq!(c.mode, Vector);
        assert!(c.fallback_reason.contains("does not include hybrid search"));
        assert!(
            c.fallback_reason
                .contains("the Premium tier and higher include it")
        );
        assert_eq!(
            choose(Tier::Advanced, Hybrid, false, true, false).unwrap().mode,
            Text
        );
        assert!(choose(Tier::Advanced, Hybrid, true, true, true).is_err());
        assert_eq!(
            choose(Tier::Advanced, Unspecified, true, true, false)
                .unwrap()
                .mode,
            Vector
        );
        assert_eq!(
            choose(Tier::Advanced, Unspecified, false, true, false)
                .unwrap()
                .mode,
            Text
        );
    }

    #[test]
    fn premium_and_admin_get_hybrid_without_recommendation() {
        for tier in [Tier::Premium, Tier::Admin] {
            for mode in [Vector, Hybrid] {
                let c = choose(tier, mode, false, true, true).unwrap();
                assert_eq!(
                    c,
                    ModeChoice {
                        mode,
                        fallback_reason: String::new()
                    }
                );
            }
            assert_eq!(
                choose(tier, Unspecified, false, true, false).unwrap().mode,
                Hybrid
            );
        }
    }

    #[test]
    fn no_model_means_text_for_everyone_with_the_reason() {
        for tier in [Tier::Advanced, Tier::Premium, Tier::Admin] {
            for mode in [Vector, Hybrid, Unspecified] {
                for strict in [false, true] {
                    if tier == Tier::Advanced && mode == Hybrid && strict {
                        continue; // refused by the tier first (tested above)
                    }
                    let c = choose(tier, mode, true, false, strict).unwrap();
                    assert_eq!(c.mode, Text, "{tier:?} {mode:?}");
                    assert!(
                        c.fallback_reason.contains("no embedding model"),
                        "{}",
                        c.fallback_reason
                    );
                }
            }
        }
    }

    #[test]
    fn the_lowest_tier_comes_from_the_data() {
        // A deployment that gives Tester vectors: Free is told Tester.
        let mut tiers = table();
        tiers[1].index_modes.push(Vector as i32);
        let free = tiers[0].clone();
        let err = choose_mode(ModeInputs {
            requested: Vector,
            policy: &free,
            tiers: &tiers,
            env_recommends_vector: true,
            model_present: true,
            strict: true,
        })
        .unwrap_err();
        assert!(err.to_string().contains("needs the Tester tier"), "{err}");
        let none: Vec<TierPolicy> = tiers
            .iter()
            .map(|p| policy(Tier::try_from(p.tier).unwrap(), &[Text], false))
            .collect();
        let err = choose_mode(ModeInputs {
            requested: Hybrid,
            policy: &none[0],
            tiers: &none,
            env_recommends_vector: true,
            model_present: true,
            strict: true,
        })
        .unwrap_err();
        assert!(err.to_string().contains("not available on any tier"), "{err}");
    }
}

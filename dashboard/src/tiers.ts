import { auth } from "./api";
import type { TierPolicy } from "./gen/reporunner/auth/v1/auth_pb";
import { type IndexMode, Tier } from "./gen/reporunner/common/v1/tier_pb";

let cached: Promise<TierPolicy[]> | null = null;

/** Every tier's policy, lowest first (ListTierPolicies needs no token). */
export function policies(): Promise<TierPolicy[]> {
  cached ??= auth.listTierPolicies({}).then((r) => r.policies);
  cached.catch(() => {
    cached = null;
  });
  return cached;
}

/** The lowest tier below Admin whose policy offers `mode`, if any. */
export function lowestTierWith(all: TierPolicy[], mode: IndexMode): Tier | null {
  const policy = all.find((p) => p.tier !== Tier.ADMIN && p.indexModes.includes(mode));
  return policy ? policy.tier : null;
}

import { useEffect, useState } from "preact/hooks";
import { auth, message } from "../api";
import { Bars } from "../charts";
import { bytes, capital, duration, modeLabel, tierLabel } from "../format";
import { type GetUsageResponse, UsageKind, type WhoAmIResponse } from "../gen/reporunner/auth/v1/auth_pb";
import type { TierPolicy } from "../gen/reporunner/auth/v1/auth_pb";
import { IndexMode } from "../gen/reporunner/common/v1/tier_pb";
import { lowestTierWith, policies } from "../tiers";

const KINDS: [UsageKind, string][] = [
  [UsageKind.METERED_REQUEST, "Metered requests"],
  [UsageKind.RUN_CREATED, "Runs created"],
  [UsageKind.SEARCH, "Searches"],
  [UsageKind.INDEX, "Index builds"],
];

export function Usage() {
  const [me, setMe] = useState<WhoAmIResponse | null>(null);
  const [usage, setUsage] = useState<GetUsageResponse | null>(null);
  const [tiers, setTiers] = useState<TierPolicy[]>([]);
  const [error, setError] = useState("");
  useEffect(() => {
    const load = () => {
      Promise.all([auth.whoAmI({}), auth.getUsage({})])
        .then(([who, used]) => {
          setMe(who);
          setUsage(used);
        })
        .catch((err) => setError(message(err)));
    };
    load();
    policies()
      .then(setTiers)
      .catch(() => {});
    const timer = setInterval(load, 10000);
    return () => clearInterval(timer);
  }, []);
  if (error) {
    return (
      <section>
        <h1>Usage</h1>
        <p role="alert" class="error">
          {error}
        </p>
      </section>
    );
  }
  if (!me || !usage) return <p aria-busy="true">Loading usage…</p>;
  const policy = me.policy;
  const limit = usage.meteredLimitPerHour;
  const used = limit - usage.meteredRemaining;
  const count = (kind: UsageKind) => Number(usage.counters.find((c) => c.kind === kind)?.lastHour ?? 0n);
  const total = (kind: UsageKind) => Number(usage.counters.find((c) => c.kind === kind)?.total ?? 0n);
  const missing = [IndexMode.VECTOR, IndexMode.HYBRID].filter((m) => !policy?.indexModes.includes(m));
  return (
    <section>
      <h1>Usage</h1>
      <p>
        Your tier: <strong>{tierLabel(me.user?.tier ?? 0)}</strong>. Metered calls (new runs, index builds, searches)
        count against an hourly quota.
      </p>
      <Bars
        title="Your quota in the last hour"
        bars={[
          { label: "Metered requests", value: used, max: limit },
          ...KINDS.slice(1).map(([kind, label]) => ({ label, value: count(kind), max: limit })),
        ]}
      />
      <p>
        {usage.meteredRemaining} of {limit} metered requests left this hour.
      </p>
      <h2>All time</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Kind</th>
            <th scope="col">Last hour</th>
            <th scope="col">Total</th>
          </tr>
        </thead>
        <tbody>
          {KINDS.map(([kind, label]) => (
            <tr key={kind}>
              <td>{label}</td>
              <td>{count(kind)}</td>
              <td>{total(kind)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {policy && (
        <>
          <h2>Your tier's limits</h2>
          <dl class="facts">
            <dt>Concurrent runs</dt>
            <dd>{policy.concurrentRuns}</dd>
            <dt>Heal attempts per run</dt>
            <dd>{policy.maxHealAttempts}</dd>
            <dt>Workspace size</dt>
            <dd>{bytes(policy.maxWorkspaceBytes)}</dd>
            <dt>Run time</dt>
            <dd>{duration(policy.maxRunSeconds * 1000)}</dd>
            <dt>Search modes</dt>
            <dd>{policy.indexModes.map(modeLabel).join(", ") || "none"}</dd>
          </dl>
          {missing.length > 0 && (
            <ul class="modes">
              {missing.map((mode) => {
                const tier = lowestTierWith(tiers, mode);
                return (
                  <li key={mode}>
                    {capital(modeLabel(mode))} search is unavailable on your tier
                    {tier !== null ? `: it comes with the ${tierLabel(tier)} tier` : ""}.
                  </li>
                );
              })}
            </ul>
          )}
        </>
      )}
    </section>
  );
}

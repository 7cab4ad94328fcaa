import { useEffect, useState } from "preact/hooks";
import { auth, message, orchestrator } from "../api";
import { capital, modeLabel, sourceLabel, tierLabel } from "../format";
import type { TierPolicy } from "../gen/reporunner/auth/v1/auth_pb";
import { IndexMode } from "../gen/reporunner/common/v1/tier_pb";
import type { SearchHit } from "../gen/reporunner/index/v1/index_pb";
import type { Run } from "../gen/reporunner/orchestrator/v1/orchestrator_pb";
import { lowestTierWith, policies } from "../tiers";

const MODES = [IndexMode.TEXT, IndexMode.VECTOR, IndexMode.HYBRID];

export function Search() {
  const [runs, setRuns] = useState<Run[]>([]);
  const [allowed, setAllowed] = useState<IndexMode[] | null>(null);
  const [tiers, setTiers] = useState<TierPolicy[]>([]);
  const [mine, setMine] = useState<IndexMode[]>([]);
  const [hits, setHits] = useState<SearchHit[] | null>(null);
  const [note, setNote] = useState("");
  const [error, setError] = useState("");
  const [progress, setProgress] = useState("");
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    orchestrator
      .listRuns({ pageSize: 100 })
      .then((r) => setRuns(r.runs.filter((run) => run.workspace)))
      .catch((err) => setError(message(err)));
    orchestrator
      .getRecommendations({})
      .then((r) => setAllowed(r.allowedIndexModes))
      .catch((err) => setError(message(err)));
    policies()
      .then(setTiers)
      .catch(() => {});
    auth
      .whoAmI({})
      .then((me) => setMine(me.policy?.indexModes ?? []))
      .catch(() => {});
  }, []);

  const offered = (mode: IndexMode) => allowed?.includes(mode) ?? mode === IndexMode.TEXT;
  const why = (mode: IndexMode) => {
    // The tier has it, so the host does not: the env-detector does not recommend vectors here.
    if (mine.includes(mode)) return "is not offered by this server's host";
    const tier = lowestTierWith(tiers, mode);
    return tier === null ? "is not offered on this server" : `needs the ${tierLabel(tier)} tier`;
  };

  return (
    <section>
      <h1>Search code</h1>
      <form
        class="stack"
        onSubmit={async (e) => {
          e.preventDefault();
          const form = new FormData(e.currentTarget as HTMLFormElement);
          setBusy(true);
          setError("");
          setNote("");
          try {
            const reply = await orchestrator.search({
              runId: String(form.get("run") ?? ""),
              query: String(form.get("query") ?? ""),
              mode: Number(form.get("mode")) as IndexMode,
              limit: 20,
            });
            setHits(reply.hits);
            if (reply.fallbackReason) setNote(`Searched in ${modeLabel(reply.mode)} mode: ${reply.fallbackReason}`);
          } catch (err) {
            setError(message(err));
            setHits(null);
          } finally {
            setBusy(false);
          }
        }}
      >
        <label for="run">Workspace of run</label>
        <select id="run" name="run" required>
          {runs.map((run) => (
            <option key={run.id} value={run.id}>
              {sourceLabel(run.source)} ({run.id.slice(0, 8)})
            </option>
          ))}
        </select>
        <label for="query">Query</label>
        <input id="query" name="query" required placeholder="where is the password hashed?" />
        <label for="mode">Mode</label>
        <select id="mode" name="mode">
          {MODES.map((mode) => (
            <option key={mode} value={mode} disabled={!offered(mode)}>
              {modeLabel(mode)}
              {!offered(mode) ? ` — unavailable: ${why(mode).replace(/^is /, "")}` : ""}
            </option>
          ))}
        </select>
        <ul class="modes" aria-label="Search modes">
          {MODES.filter((m) => !offered(m)).map((mode) => (
            <li key={mode}>
              {capital(modeLabel(mode))} search is unavailable to you: it {why(mode)}.
            </li>
          ))}
        </ul>
        <div class="row">
          <button type="submit" disabled={busy || runs.length === 0}>
            Search
          </button>
          <button
            type="button"
            class="secondary"
            disabled={busy || runs.length === 0}
            onClick={async (e) => {
              const select = (e.currentTarget as HTMLButtonElement).form?.elements.namedItem("run") as HTMLSelectElement;
              setBusy(true);
              setError("");
              try {
                for await (const step of orchestrator.indexWorkspace({ runId: select.value, mode: IndexMode.TEXT })) {
                  const p = step.progress;
                  setProgress(
                    step.done
                      ? `Indexed: ${p?.filesSeen ?? 0n} files, ${p?.chunks ?? 0n} chunks (${modeLabel(step.mode)})`
                      : `Indexing… ${p?.filesIndexed ?? 0n} of ${p?.filesSeen ?? 0n} files`,
                  );
                }
              } catch (err) {
                setError(message(err));
              } finally {
                setBusy(false);
              }
            }}
          >
            Index this workspace
          </button>
        </div>
        {runs.length === 0 && <p class="muted">No run has a workspace yet: start one first.</p>}
        {progress && <p role="status">{progress}</p>}
      </form>
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      {note && <p role="status">{note}</p>}
      {hits !== null && (
        <>
          <h2>
            {hits.length} result{hits.length === 1 ? "" : "s"}
          </h2>
          <ol class="hits">
            {hits.map((hit) => (
              <li key={`${hit.path}:${hit.startLine}`}>
                <div>
                  <span class="mono">
                    {hit.path}:{hit.startLine}–{hit.endLine}
                  </span>
                  {hit.symbol && <span class="muted"> in {hit.symbol}</span>}
                  <span class="muted"> · score {hit.score.toFixed(3)}</span>
                </div>
                <pre>{hit.snippet}</pre>
              </li>
            ))}
          </ol>
        </>
      )}
    </section>
  );
}

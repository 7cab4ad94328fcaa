import { toJson } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { useEffect, useRef, useState } from "preact/hooks";
import { freshen, isCode, message, orchestrator } from "../api";
import { HealthChart, type HealthPoint } from "../charts";
import { date, duration, goalLabel, healthLabel, isLive, sourceLabel, stepLabel, stepStatusLabel, time } from "../format";
import { TestOutcome } from "../gen/reporunner/agents/tester/v1/tester_pb";
import { PlanPatchSchema } from "../gen/reporunner/common/v1/plan_pb";
import type { LogLine } from "../gen/reporunner/common/v1/workspace_pb";
import {
  ComponentHealth,
  type HealEvent,
  type Run,
  type RunEvent,
  RunState,
  type Step,
  type StepStatus,
  type TestResult,
} from "../gen/reporunner/orchestrator/v1/orchestrator_pb";
import { runDuration, StateBadge } from "./runs";

const MAX_LINES = 5000;

interface StepRow {
  step: Step;
  status: StepStatus;
  detail: string;
  durationMs: number;
}

interface Live {
  run: Run | null;
  steps: Map<Step, StepRow>;
  logs: Map<string, LogLine[]>;
  health: Map<string, HealthPoint[]>;
  heals: HealEvent[];
  tests: TestResult[];
  urls: Set<string>;
  notices: string[];
}

function empty(): Live {
  return {
    run: null,
    steps: new Map(),
    logs: new Map(),
    health: new Map(),
    heals: [],
    tests: [],
    urls: new Set(),
    notices: [],
  };
}

function apply(live: Live, ev: RunEvent) {
  const at = date(ev.time)?.getTime() ?? Date.now();
  const e = ev.event;
  switch (e.case) {
    case "state":
      if (live.run) live.run.state = e.value;
      break;
    case "step":
      live.steps.set(e.value.step, {
        step: e.value.step,
        status: e.value.status,
        detail: e.value.detail,
        durationMs: e.value.durationMs,
      });
      break;
    case "log": {
      const lines = live.logs.get(e.value.source) ?? [];
      lines.push(e.value);
      if (lines.length > MAX_LINES) lines.splice(0, lines.length - MAX_LINES);
      live.logs.set(e.value.source, lines);
      break;
    }
    case "health": {
      const points = live.health.get(e.value.component) ?? [];
      points.push({ at, health: e.value.health });
      live.health.set(e.value.component, points);
      const component = live.run?.components.find((c) => c.name === e.value.component);
      if (component) component.health = e.value.health;
      break;
    }
    case "heal":
      live.heals.push(e.value);
      break;
    case "url":
      live.urls.add(e.value);
      break;
    case "notice":
      live.notices.push(e.value);
      break;
    case "test":
      live.tests.push(e.value);
      break;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function RunPage(props: { id: string }) {
  const { id } = props;
  const live = useRef<Live>(empty());
  const [, setVersion] = useState(0);
  const [error, setError] = useState("");
  const [streaming, setStreaming] = useState(false);
  const [stopping, setStopping] = useState(false);
  const [source, setSource] = useState("");
  const [now, setNow] = useState(Date.now());
  const pending = useRef(false);
  const logBox = useRef<HTMLPreElement>(null);
  const follow = useRef(true);

  // Re-render at most once a frame however fast events come.
  const redraw = () => {
    if (pending.current) return;
    pending.current = true;
    requestAnimationFrame(() => {
      pending.current = false;
      setVersion((v) => v + 1);
      setNow(Date.now());
    });
  };

  const reload = async () => {
    const reply = await orchestrator.getRun({ runId: id });
    if (reply.run) {
      live.current.run = reply.run;
      reply.run.components.forEach((c) => c.url && live.current.urls.add(c.url));
      redraw();
    }
  };

  useEffect(() => {
    live.current = empty();
    const abort = new AbortController();
    (async () => {
      let after = 0n;
      for (let attempt = 0; attempt < 100 && !abort.signal.aborted; attempt++) {
        try {
          await reload();
          await freshen();
          setStreaming(true);
          for await (const reply of orchestrator.watchRun({ runId: id, afterSequence: after }, { signal: abort.signal })) {
            if (!reply.event) continue;
            after = reply.event.sequence;
            apply(live.current, reply.event);
            redraw();
          }
          setStreaming(false);
          await reload();
          setError("");
          return;
        } catch (err) {
          setStreaming(false);
          if (abort.signal.aborted) return;
          setError(message(err));
          if (isCode(err, Code.NotFound) || isCode(err, Code.PermissionDenied)) return;
          await sleep(2000);
        }
      }
    })();
    const timer = setInterval(() => {
      const run = live.current.run;
      if (run && isLive(run.state)) reload().catch(() => {});
      setNow(Date.now());
    }, 5000);
    return () => {
      abort.abort();
      clearInterval(timer);
    };
  }, [id]);

  const data = live.current;
  const run = data.run;
  const sources = [...data.logs.keys()];
  // Unless the user picked one: the first component with logs, else the newest step's.
  const component = run?.components.find((c) => data.logs.has(c.name))?.name;
  const shown = source && data.logs.has(source) ? source : (component ?? sources[sources.length - 1] ?? "");
  const lines = data.logs.get(shown) ?? [];

  useEffect(() => {
    const box = logBox.current;
    if (box && follow.current) box.scrollTop = box.scrollHeight;
  });

  if (!run) {
    return (
      <section>
        <h1>Run</h1>
        {error ? (
          <p role="alert" class="error">
            {error}
          </p>
        ) : (
          <p aria-busy="true">Loading the run…</p>
        )}
      </section>
    );
  }

  const steps = [...data.steps.values()];
  return (
    <section class="run">
      <div class="title-row">
        <h1>
          Run of <span class="mono">{sourceLabel(run.source)}</span>
        </h1>
        {isLive(run.state) && (
          <button
            type="button"
            class="danger"
            disabled={stopping}
            onClick={async () => {
              setStopping(true);
              try {
                await orchestrator.stopRun({ runId: id });
                await reload();
              } catch (err) {
                setError(message(err));
              } finally {
                setStopping(false);
              }
            }}
          >
            {stopping ? "Stopping…" : "Stop run"}
          </button>
        )}
      </div>
      <dl class="facts">
        <dt>State</dt>
        <dd>
          <StateBadge run={run} /> {streaming && <span class="muted">live</span>}
        </dd>
        <dt>Goal</dt>
        <dd>{goalLabel(run.goal)}</dd>
        <dt>Started</dt>
        <dd>{time(run.createdAt)}</dd>
        <dt>Duration</dt>
        <dd>{runDuration(run, now)}</dd>
        <dt>Run id</dt>
        <dd class="mono">{run.id}</dd>
      </dl>
      {run.error && (
        <p class="error" role="status">
          {run.error}
        </p>
      )}
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      {data.urls.size > 0 && (
        <p>
          {[...data.urls].map((url) => (
            <a key={url} class="button" href={url} target="_blank" rel="noopener noreferrer">
              Open the app ({url})
            </a>
          ))}
        </p>
      )}

      <h2>Steps</h2>
      {steps.length === 0 ? (
        <p class="muted">No step has started yet.</p>
      ) : (
        <ol class="steps" aria-live="polite">
          {steps.map((s) => (
            <li key={s.step} class={`step-${stepStatusLabel(s.status).replace(/ /g, "-")}`}>
              <strong>{stepLabel(s.step)}</strong>: {stepStatusLabel(s.status)}
              {s.durationMs > 0 && <span class="muted"> in {duration(s.durationMs)}</span>}
              {s.detail && <div class="detail">{s.detail}</div>}
            </li>
          ))}
        </ol>
      )}

      <h2>Components</h2>
      {run.components.length === 0 ? (
        <p class="muted">No component started.</p>
      ) : (
        <>
          <table>
            <thead>
              <tr>
                <th scope="col">Component</th>
                <th scope="col">Health</th>
                <th scope="col">Address</th>
              </tr>
            </thead>
            <tbody>
              {run.components.map((c) => {
                const health = isLive(run.state) ? c.health : ComponentHealth.STOPPED;
                return (
                  <tr key={c.name}>
                    <td>{c.name}</td>
                    <td>
                      <span class={`badge ${health === ComponentHealth.HEALTHY ? "good" : health === ComponentHealth.UNHEALTHY ? "bad" : "muted"}`}>
                        {healthLabel(health)}
                      </span>
                    </td>
                    <td>
                      {c.url ? (
                        <a href={c.url} target="_blank" rel="noopener noreferrer">
                          {c.url}
                        </a>
                      ) : (
                        "—"
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          {[...data.health.entries()].map(([component, points]) => (
            <HealthChart key={component} component={component} points={points} now={now} />
          ))}
        </>
      )}

      <h2>Logs</h2>
      {sources.length === 0 ? (
        <p class="muted">No log line yet.</p>
      ) : (
        <>
          <label for="log-source">Source</label>
          <select id="log-source" value={shown} onChange={(e) => setSource((e.target as HTMLSelectElement).value)}>
            {sources.map((s) => (
              <option key={s} value={s}>
                {s} ({data.logs.get(s)?.length ?? 0} lines)
              </option>
            ))}
          </select>
          <pre
            ref={logBox}
            class="logs"
            role="log"
            aria-label={`Logs of ${shown}`}
            tabIndex={0}
            onScroll={(e) => {
              const box = e.currentTarget as HTMLPreElement;
              follow.current = box.scrollTop + box.clientHeight >= box.scrollHeight - 20;
            }}
          >
            {lines.map((l) => l.text).join("\n")}
          </pre>
        </>
      )}

      {(data.tests.length > 0 || run.testResults.length > 0) && (
        <>
          <h2>Tests</h2>
          <table>
            <thead>
              <tr>
                <th scope="col">Component</th>
                <th scope="col">Framework</th>
                <th scope="col">Outcome</th>
                <th scope="col">Passed</th>
                <th scope="col">Failed</th>
                <th scope="col">Time</th>
              </tr>
            </thead>
            <tbody>
              {(run.testResults.length > 0 ? run.testResults : data.tests).map((t) => (
                <tr key={t.component + t.command}>
                  <td>{t.component}</td>
                  <td>{t.framework}</td>
                  <td>{t.summary || TestOutcome[t.outcome]?.toLowerCase()}</td>
                  <td>{t.counts?.passed ?? 0}</td>
                  <td>{t.counts?.failed ?? 0}</td>
                  <td>{duration(t.durationMs)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}

      {data.heals.length > 0 && (
        <>
          <h2>Heal attempts</h2>
          <ol class="heals">
            {data.heals.map((h) => (
              <li key={h.attempt}>
                <strong>Attempt {h.attempt}</strong>: {h.cause}
                <div>{h.summary}</div>
                {h.patches.length > 0 && (
                  <ul>
                    {h.patches.map((p, i) => (
                      <li key={i}>
                        {p.reason} <code>{JSON.stringify(toJson(PlanPatchSchema, p))}</code>
                      </li>
                    ))}
                  </ul>
                )}
              </li>
            ))}
          </ol>
        </>
      )}

      {data.notices.length > 0 && (
        <>
          <h2>Notices</h2>
          <ul>
            {data.notices.map((n, i) => (
              <li key={i}>{n}</li>
            ))}
          </ul>
        </>
      )}
      {run.state === RunState.UNSPECIFIED && <p class="muted">Unknown state.</p>}
    </section>
  );
}

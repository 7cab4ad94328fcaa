import { useEffect, useState } from "preact/hooks";
import { message, orchestrator } from "../api";
import { date, duration, goalLabel, isLive, sourceLabel, stateLabel, stateTone, time } from "../format";
import type { Run } from "../gen/reporunner/orchestrator/v1/orchestrator_pb";
import { Link } from "../router";

export function runDuration(run: Run, now: number): string {
  const start = date(run.createdAt)?.getTime();
  if (!start) return "—";
  const end = isLive(run.state) ? now : (date(run.updatedAt)?.getTime() ?? now);
  return duration(end - start);
}

export function StateBadge(props: { run: Run }) {
  return <span class={`badge ${stateTone(props.run.state)}`}>{stateLabel(props.run.state)}</span>;
}

export function Runs() {
  const [runs, setRuns] = useState<Run[] | null>(null);
  const [error, setError] = useState("");
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    let stop = false;
    const load = async () => {
      try {
        const reply = await orchestrator.listRuns({ pageSize: 100 });
        if (!stop) {
          setRuns(reply.runs);
          setError("");
        }
      } catch (err) {
        if (!stop) setError(message(err));
      }
      if (!stop) setNow(Date.now());
    };
    load();
    const timer = setInterval(load, 5000);
    return () => {
      stop = true;
      clearInterval(timer);
    };
  }, []);
  return (
    <section>
      <div class="title-row">
        <h1>Your runs</h1>
        <Link href="/runs/new" class="button">
          New run
        </Link>
      </div>
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      {runs === null ? (
        <p aria-busy="true">Loading runs…</p>
      ) : runs.length === 0 ? (
        <p>No runs yet. Start one from a git URL.</p>
      ) : (
        <table>
          <caption class="visually-hidden">Runs, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Repository</th>
              <th scope="col">State</th>
              <th scope="col">Goal</th>
              <th scope="col">Started</th>
              <th scope="col">Duration</th>
            </tr>
          </thead>
          <tbody>
            {runs.map((run) => (
              <tr key={run.id}>
                <td>
                  <Link href={`/runs/${encodeURIComponent(run.id)}`}>{sourceLabel(run.source)}</Link>
                </td>
                <td>
                  <StateBadge run={run} />
                </td>
                <td>{goalLabel(run.goal)}</td>
                <td>{time(run.createdAt)}</td>
                <td>{runDuration(run, now)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

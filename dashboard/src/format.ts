import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { IndexMode, Tier } from "./gen/reporunner/common/v1/tier_pb";
import {
  ComponentHealth,
  type RepoSource,
  RunGoal,
  RunState,
  Step,
  StepStatus,
} from "./gen/reporunner/orchestrator/v1/orchestrator_pb";

/** An enum value's name as words: RunState.RUNNING -> "running". */
function words(table: Record<number, string>, value: number): string {
  const name = table[value] ?? "unknown";
  return name.toLowerCase().replace(/_/g, " ");
}

export const stateLabel = (s: RunState) => words(RunState, s);
export const goalLabel = (g: RunGoal) => words(RunGoal, g);
export const stepLabel = (s: Step) => words(Step, s);
export const stepStatusLabel = (s: StepStatus) => words(StepStatus, s);
export const healthLabel = (h: ComponentHealth) => words(ComponentHealth, h);
export const modeLabel = (m: IndexMode) => words(IndexMode, m);
export function tierLabel(t: Tier): string {
  const w = words(Tier, t);
  return w.charAt(0).toUpperCase() + w.slice(1);
}

/** States in which a run still has live components or work to do. */
export function isLive(s: RunState): boolean {
  return ![RunState.SUCCEEDED, RunState.FAILED, RunState.STOPPED, RunState.INTERRUPTED].includes(s);
}

export function stateTone(s: RunState): string {
  if (s === RunState.RUNNING || s === RunState.SUCCEEDED) return "good";
  if (s === RunState.FAILED || s === RunState.INTERRUPTED) return "bad";
  if (s === RunState.DEGRADED) return "warn";
  if (s === RunState.STOPPED) return "muted";
  return "busy";
}

export function sourceLabel(source?: RepoSource): string {
  const s = source?.source;
  if (!s || !s.case) return "—";
  const ref = source?.ref ? ` @ ${source.ref}` : "";
  if (s.case === "archive") return `uploaded ${s.value.fileName || "archive"}`;
  return `${s.value}${ref}`;
}

export function date(ts?: Timestamp): Date | null {
  return ts ? timestampDate(ts) : null;
}

export function time(ts?: Timestamp): string {
  const d = date(ts);
  return d ? d.toLocaleString() : "—";
}

export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "—";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function bytes(n: bigint | number): string {
  const v = Number(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let x = v;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${x.toFixed(x < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

/** The first letter in capitals, for a label that starts a sentence. */
export function capital(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

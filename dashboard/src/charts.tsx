// Charts as plain SVG: no library, no inline style (the CSP forbids it),
// each with a text equivalent for screen readers.
import { ComponentHealth } from "./gen/reporunner/orchestrator/v1/orchestrator_pb";
import { healthLabel } from "./format";

export interface Bar {
  label: string;
  value: number;
  max: number;
}

/** Horizontal bars of value against max, one row each. */
export function Bars(props: { title: string; bars: Bar[] }) {
  const row = 34;
  const width = 560;
  const labelWidth = 190;
  const barWidth = width - labelWidth - 90;
  const height = props.bars.length * row + 8;
  const summary = props.bars.map((b) => `${b.label}: ${b.value} of ${b.max}`).join("; ");
  return (
    <figure class="chart">
      <svg viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`${props.title}. ${summary}`}>
        {props.bars.map((b, i) => {
          const y = i * row + 4;
          const share = b.max > 0 ? Math.min(1, b.value / b.max) : 0;
          const tone = share >= 1 ? "bar-full" : share >= 0.8 ? "bar-high" : "bar-ok";
          return (
            <g key={b.label}>
              <text x={0} y={y + 19} class="chart-label">
                {b.label}
              </text>
              <rect x={labelWidth} y={y + 4} width={barWidth} height={20} class="bar-track" rx={3} />
              <rect x={labelWidth} y={y + 4} width={Math.max(share * barWidth, b.value > 0 ? 2 : 0)} height={20} class={tone} rx={3} />
              <text x={labelWidth + barWidth + 8} y={y + 19} class="chart-value">
                {b.value} / {b.max}
              </text>
            </g>
          );
        })}
      </svg>
      <figcaption>{props.title}</figcaption>
    </figure>
  );
}

export interface HealthPoint {
  at: number;
  health: ComponentHealth;
}

const LEVELS = [
  ComponentHealth.HEALTHY,
  ComponentHealth.STARTING,
  ComponentHealth.UNPROBED,
  ComponentHealth.UNHEALTHY,
  ComponentHealth.STOPPED,
];

/** A component's health over time: a step line across the levels. */
export function HealthChart(props: { component: string; points: HealthPoint[]; now: number }) {
  const width = 560;
  const left = 90;
  const rowH = 18;
  const height = LEVELS.length * rowH + 24;
  const pts = props.points;
  if (pts.length === 0) return null;
  const start = pts[0].at;
  const end = Math.max(props.now, start + 1000);
  const x = (t: number) => left + ((t - start) / (end - start)) * (width - left - 10);
  const y = (h: ComponentHealth) => Math.max(0, LEVELS.indexOf(h)) * rowH + 12;
  let d = "";
  pts.forEach((p, i) => {
    const nextAt = i + 1 < pts.length ? pts[i + 1].at : end;
    d += `${i === 0 ? "M" : "L"}${x(p.at).toFixed(1)},${y(p.health)} L${x(nextAt).toFixed(1)},${y(p.health)} `;
  });
  const last = pts[pts.length - 1];
  const summary = `${props.component}: ${pts.length} health changes, now ${healthLabel(last.health)}`;
  return (
    <figure class="chart">
      <svg viewBox={`0 0 ${width} ${height}`} role="img" aria-label={summary}>
        {LEVELS.map((h) => (
          <g key={h}>
            <text x={0} y={y(h) + 4} class="chart-label">
              {healthLabel(h)}
            </text>
            <line x1={left} x2={width - 10} y1={y(h)} y2={y(h)} class="grid" />
          </g>
        ))}
        <path d={d} class="health-line" fill="none" />
        <text x={left} y={height - 2} class="chart-label">
          {new Date(start).toLocaleTimeString()}
        </text>
        <text x={width - 10} y={height - 2} class="chart-label" text-anchor="end">
          {new Date(end).toLocaleTimeString()}
        </text>
      </svg>
      <figcaption>{summary}</figcaption>
    </figure>
  );
}

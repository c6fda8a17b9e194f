// bench/results.svg: throughput and latency of get and put at each concurrency, for kvql and its
// baselines, side by side. Self-contained SVG written by hand: no dependency, no script, no
// external font or style. Log scales, because the systems differ by orders of magnitude.
import type { Op } from './driver.js';
import { ms, SYSTEMS, type Results } from './results.js';

const COLORS: Record<string, string> = { kvql: '#d62728', raw: '#1f77b4', bare: '#2ca02c', etcd: '#ff7f0e' };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const f1 = (x: number) => Number(x.toFixed(1));

function compact(x: number): string {
  if (x >= 1e6) return `${f1(x / 1e6)}M`;
  if (x >= 1e3) return `${f1(x / 1e3)}k`;
  return x >= 10 ? x.toFixed(0) : String(f1(x));
}

interface Bar {
  group: number;
  system: string;
  value: number;
  /** Latency: the p99, drawn as a whisker above the p50 bar. */
  whisker?: number;
  tooltip: string;
}

/** One panel: grouped bars on a log scale, a group per concurrency. */
function panel(x: number, y: number, w: number, h: number, title: string, groups: string[], bars: Bar[], unit: (v: number) => string): string {
  const out: string[] = [];
  const values = bars.flatMap((b) => [b.value, b.whisker ?? b.value]).filter((v) => v > 0 && Number.isFinite(v));
  const lo = values.length > 0 ? Math.floor(Math.log10(Math.min(...values))) : 0;
  const hi = values.length > 0 ? Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...values)) + 0.05)) : 1;
  const yOf = (v: number) => y + h - ((Math.log10(v) - lo) / (hi - lo)) * h;
  out.push(`<text x="${x + w / 2}" y="${y - 12}" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`);
  for (let d = lo; d <= hi; d++) {
    const gy = f1(yOf(10 ** d));
    out.push(`<line x1="${x}" y1="${gy}" x2="${x + w}" y2="${gy}" stroke="#ddd"/>`);
    out.push(`<text x="${x - 6}" y="${gy + 4}" text-anchor="end" font-size="11" fill="#444">${esc(unit(10 ** d))}</text>`);
  }
  out.push(`<rect x="${x}" y="${y}" width="${w}" height="${h}" fill="none" stroke="#888"/>`);
  const gw = w / groups.length;
  const bw = (gw * 0.8) / SYSTEMS.length;
  groups.forEach((g, i) => {
    out.push(`<text x="${f1(x + gw * (i + 0.5))}" y="${y + h + 16}" text-anchor="middle" font-size="11">${esc(g)}</text>`);
  });
  for (const b of bars) {
    const s = SYSTEMS.findIndex((sys) => sys.id === b.system);
    const bx = f1(x + gw * b.group + gw * 0.1 + bw * s);
    if (!(b.value > 0 && Number.isFinite(b.value))) {
      out.push(`<text x="${f1(bx + bw / 2)}" y="${y + h - 4}" text-anchor="middle" font-size="8" fill="#888">n/a</text>`);
      continue;
    }
    const top = f1(yOf(b.value));
    out.push(
      `<rect x="${bx}" y="${top}" width="${f1(bw - 1)}" height="${f1(y + h - top)}" fill="${COLORS[b.system]}"><title>${esc(b.tooltip)}</title></rect>`,
    );
    if (b.whisker !== undefined && b.whisker > 0) {
      const wy = f1(yOf(b.whisker));
      const cx = f1(bx + (bw - 1) / 2);
      out.push(`<line x1="${cx}" y1="${top}" x2="${cx}" y2="${wy}" stroke="#000" stroke-width="1"/>`);
      out.push(`<line x1="${f1(cx - bw / 4)}" y1="${wy}" x2="${f1(cx + bw / 4)}" y2="${wy}" stroke="#000" stroke-width="1"/>`);
    } else {
      out.push(`<text x="${f1(bx + bw / 2)}" y="${f1(top - 3)}" text-anchor="middle" font-size="8">${esc(compact(b.value))}</text>`);
    }
  }
  return out.join('\n');
}

export function renderChart(r: Results): string {
  const W = 1240;
  // One row of panels per operation measured (results before 2026-11-28 have no delete).
  const ops = (['get', 'put', 'delete'] as Op[]).filter((op) => r.rows.some((x) => x.op === op));
  const H = 130 + ops.length * 340 - 40;
  const parts: string[] = [];
  parts.push(
    `<text x="${W / 2}" y="28" text-anchor="middle" font-size="18" font-weight="bold">kvql vs raw Redis, bare Node and etcd: ${ops.join(', ').replace(/, (\w+)$/, ' and $1')}, closed loop</text>`,
    `<text x="${W / 2}" y="48" text-anchor="middle" font-size="12" fill="#444">${esc(
      `${r.date.slice(0, 16).replace('T', ' ')} UTC; ${r.machine.cpu}, ${r.machine.cores} cores; Node ${r.machine.node}, Redis ${r.machine.redis}, etcd ${r.machine.etcd ?? 'not installed'}; ${r.options.seconds} s per point`,
    )}</text>`,
  );
  SYSTEMS.forEach((s, i) => {
    const lx = W / 2 - 260 + i * 130;
    parts.push(`<rect x="${lx}" y="62" width="12" height="12" fill="${COLORS[s.id]}"/>`);
    parts.push(`<text x="${lx + 17}" y="73" font-size="12">${esc(s.label)}</text>`);
  });
  parts.push(`<text x="${W / 2}" y="92" text-anchor="middle" font-size="11" fill="#444">latency: bar p50, whisker p99 (log scales; hover a bar for its figures)</text>`);
  const pw = 500;
  const ph = 250;
  ops.forEach((op, row) => {
    const rows = r.rows.filter((x) => x.op === op).sort((a, b) => a.concurrency - b.concurrency);
    const groups = rows.map((x) => `concurrency ${x.concurrency}`);
    const tput: Bar[] = [];
    const lat: Bar[] = [];
    rows.forEach((x, g) => {
      for (const s of SYSTEMS) {
        const f = x.figures[s.id];
        const tip = f
          ? `${s.label} ${op} @${x.concurrency}: ${Math.round(f.opsPerSec)} ops/s, p50 ${ms(f.p50Ms)} ms, p99 ${ms(f.p99Ms)} ms`
          : `${s.label}: not measured`;
        tput.push({ group: g, system: s.id, value: f?.opsPerSec ?? NaN, tooltip: tip });
        lat.push({ group: g, system: s.id, value: f?.p50Ms ?? NaN, whisker: f?.p99Ms, tooltip: tip });
      }
    });
    const y = 130 + row * (ph + 90);
    parts.push(panel(90, y, pw, ph, `${op}: throughput (ops/s)`, groups, tput, compact));
    parts.push(panel(90 + pw + 130, y, pw, ph, `${op}: latency (ms)`, groups, lat, (v) => `${v < 1 ? Number(v.toPrecision(1)) : compact(v)} ms`));
  });
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}

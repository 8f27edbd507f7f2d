/**
 * The nemesis run's report: operations (ok / fail / info by path and kind),
 * faults injected by type, and the checks, as plain-text tables.
 */
import type { CheckOutcome } from './audit.ts';
import type { FaultKind, FaultStats } from './faults.ts';
import type { Tally } from './workload.ts';

export interface RunSummary {
  name: string;
  seed: number;
  nodes: number;
  durationMs: number;
  elapsedMs: number;
  finalMembers: string[];
  tallies: Map<string, Tally>;
  faults: Map<FaultKind, FaultStats>;
  checks: CheckOutcome[];
  anomalies: string[];
  replay: string;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, k) => Math.max(h.length, ...rows.map((r) => (r[k] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, k) => (k === 0 ? c.padEnd(widths[k]!) : c.padStart(widths[k]!))).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

export function passed(summary: Pick<RunSummary, 'checks'>): boolean {
  return summary.checks.length > 0 && summary.checks.every((c) => c.ok);
}

export function formatReport(s: RunSummary): string {
  const out: string[] = [];
  out.push(`nemesis run "${s.name}": ${s.nodes} nodes, seed ${s.seed}, ${(s.durationMs / 1000).toFixed(0)} s of faults, ${(s.elapsedMs / 1000).toFixed(0)} s in all; members at the end: ${s.finalMembers.join(', ')}`);
  out.push(`replay: ${s.replay}`);
  out.push('');

  const rows = [...s.tallies.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, t]) => [name, String(t.ok), String(t.fail), String(t.info), String(t.ok + t.fail + t.info)]);
  const total = [...s.tallies.values()].reduce((acc, t) => ({ ok: acc.ok + t.ok, fail: acc.fail + t.fail, info: acc.info + t.info }), { ok: 0, fail: 0, info: 0 });
  const byKind = new Map<string, Tally>();
  for (const [name, t] of s.tallies) {
    const kind = name.split(' ')[1] ?? name;
    const k = byKind.get(kind) ?? { ok: 0, fail: 0, info: 0 };
    k.ok += t.ok;
    k.fail += t.fail;
    k.info += t.info;
    byKind.set(kind, k);
  }
  for (const [kind, t] of [...byKind.entries()].sort()) rows.push([`all ${kind}`, String(t.ok), String(t.fail), String(t.info), String(t.ok + t.fail + t.info)]);
  rows.push(['total', String(total.ok), String(total.fail), String(total.info), String(total.ok + total.fail + total.info)]);
  out.push('Operations (path kind: ok = applied/answered, fail = provably no effect, info = unknown outcome)');
  out.push(table(['path kind', 'ok', 'fail', 'info', 'all'], rows));
  out.push('');

  const faultRows = [...s.faults.entries()].filter(([, f]) => f.injected > 0).map(([k, f]) => [k, String(f.injected), String(f.troubles)]);
  const injected = [...s.faults.values()].reduce((n, f) => n + f.injected, 0);
  faultRows.push(['total', String(injected), String([...s.faults.values()].reduce((n, f) => n + f.troubles, 0))]);
  out.push('Faults (troubles: could not be injected or undone as planned; see the timeline)');
  out.push(table(['fault', 'injected', 'troubles'], faultRows));
  out.push('');

  out.push('Checks');
  out.push(table(['check', 'result'], s.checks.map((c) => [c.name, c.ok ? 'PASS' : 'FAIL'])));
  for (const c of s.checks) out.push(`  ${c.ok ? 'PASS' : 'FAIL'} ${c.name}: ${c.detail.split('\n').join('\n      ')}`);
  if (s.anomalies.length > 0) {
    out.push('');
    out.push(`Anomalies (${s.anomalies.length}; not verdicts by themselves):`);
    for (const a of s.anomalies.slice(0, 20)) out.push(`  ${a}`);
  }
  out.push('');
  out.push(passed(s) ? 'RESULT: PASS' : 'RESULT: FAIL');
  return out.join('\n');
}

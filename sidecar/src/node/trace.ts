/**
 * Optional timing spans for finding where a proposal's milliseconds go.
 * Off unless RALE_TRACE_FILE names a file: then every 2 s each span's count,
 * mean and max duration and mean batch size are appended to it (one line per
 * span), prefixed by the node id. Costs one Map lookup per span when on,
 * nothing but a branch when off.
 */
import { appendFileSync } from 'node:fs';

const file = process.env.RALE_TRACE_FILE;
interface Agg { n: number; ms: number; max: number; items: number }
const aggs = new Map<string, Agg>();
let label = '';
let timer: NodeJS.Timeout | null = null;

export const tracing = file !== undefined && file !== '';

function flush(): void {
  if (aggs.size === 0 || file === undefined) return;
  const lines = [...aggs].map(([name, a]) => `${new Date().toISOString()} ${label} ${name} n=${a.n} avg=${(a.ms / a.n).toFixed(2)}ms max=${a.max.toFixed(1)}ms items/avg=${(a.items / a.n).toFixed(1)}`);
  aggs.clear();
  appendFileSync(file, lines.join('\n') + '\n');
}

/** Records one span of `ms` milliseconds covering `items` things (entries, rows). */
export function span(name: string, ms: number, items = 1, who = ''): void {
  if (!tracing) return;
  if (who !== '') label = who;
  let a = aggs.get(name);
  if (a === undefined) aggs.set(name, (a = { n: 0, ms: 0, max: 0, items: 0 }));
  a.n++;
  a.ms += ms;
  a.max = Math.max(a.max, ms);
  a.items += items;
  if (timer === null) {
    timer = setInterval(flush, 2000);
    timer.unref();
  }
}

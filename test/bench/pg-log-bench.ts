/**
 * Micro-benchmark of PgLogStorage.persist on an embedded PostgreSQL with
 * fsync and synchronous_commit on (the harness defaults).
 *
 *   npx tsx test/bench/pg-log-bench.ts [--seconds 5] [--sizes 1,16,256] [--bytes 256]
 *
 * One writer issues persist batches back to back, as one Raft driver does:
 * each batch appends `size` new entries of `bytes` bytes and updates the hard
 * state's commit index, in one transaction. Reported per batch size:
 * batches/s, entries/s, payload MB/s and persist latency percentiles. For
 * context it first measures the floor: a round trip (SELECT 1) and a
 * one-row INSERT commit (one fsync'd WAL flush).
 *
 * Not a test: figures depend on the disk and on whoever else uses the
 * machine. Run it a few times.
 */
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { EntryKind, type Entry } from '../../sidecar/src/core/types.ts';
import { startPostgres } from '../../sidecar/src/pg/embedded.ts';
import { migrate } from '../../sidecar/src/pg/migrate.ts';
import { PgLogStorage } from '../../sidecar/src/storage/pg-log.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    sizes: { type: 'string', default: '1,16,256' },
    bytes: { type: 'string', default: '256' },
  },
});
const seconds = Number(values.seconds);
const sizes = values.sizes.split(',').map(Number);
const bytes = Number(values.bytes);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** Runs `op` back to back for `ms` (after a warm-up of a tenth of it); returns latencies in ms. */
async function loop(ms: number, op: () => Promise<void>): Promise<{ count: number; elapsed: number; latencies: number[] }> {
  const warmUntil = performance.now() + ms / 10;
  while (performance.now() < warmUntil) await op();
  const latencies: number[] = [];
  const start = performance.now();
  while (performance.now() - start < ms) {
    const t0 = performance.now();
    await op();
    latencies.push(performance.now() - t0);
  }
  return { count: latencies.length, elapsed: (performance.now() - start) / 1000, latencies: latencies.sort((a, b) => a - b) };
}

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

const server = await startPostgres({ dataDir: path.join(os.tmpdir(), `rale-bench-${process.pid}`), persistent: false });
try {
  const url = await server.createDatabase('bench');
  await migrate(url);

  console.log(`PostgreSQL ${server.dataDir} on port ${server.port}; fsync on, synchronous_commit on; ${os.cpus().length} CPUs`);
  console.log(`${seconds} s per measurement, one writer, entries of ${bytes} bytes\n`);

  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query('CREATE TABLE bench_floor (id bigserial PRIMARY KEY, v bytea)');
  const rt = await loop(seconds * 1000, async () => void (await client.query('SELECT 1')));
  const payload = Buffer.alloc(bytes, 7);
  const ins = await loop(seconds * 1000, async () => void (await client.query('INSERT INTO bench_floor (v) VALUES ($1)', [payload])));
  await client.end();
  console.log('floor                     ops/s     p50 ms   p99 ms');
  console.log(`round trip (SELECT 1)  ${fmt(rt.count / rt.elapsed).padStart(8)}   ${fmt(percentile(rt.latencies, 50), 3).padStart(7)}  ${fmt(percentile(rt.latencies, 99), 3).padStart(7)}`);
  console.log(`1-row INSERT commit    ${fmt(ins.count / ins.elapsed).padStart(8)}   ${fmt(percentile(ins.latencies, 50), 3).padStart(7)}  ${fmt(percentile(ins.latencies, 99), 3).padStart(7)}\n`);

  const storage = new PgLogStorage({ connection: url });
  try {
    console.log('persist batch size   batches/s    entries/s    MB/s   p50 ms   p99 ms');
    let next = 1;
    for (const size of sizes) {
      const data = new Uint8Array(bytes).fill(size);
      const result = await loop(seconds * 1000, async () => {
        const entries: Entry[] = [];
        for (let k = 0; k < size; k++) entries.push({ index: next + k, term: 1, kind: EntryKind.Normal, data, leader: 'node1' });
        next += size;
        await storage.persist({ snapshot: null, entries, hardState: { term: 1, vote: 'node1', commit: next - 1 } });
      });
      const batchesPerS = result.count / result.elapsed;
      console.log(
        `${String(size).padStart(18)}   ${fmt(batchesPerS).padStart(9)}   ${fmt(batchesPerS * size).padStart(10)}   ${fmt((batchesPerS * size * bytes) / 1e6, 1).padStart(5)}` +
          `   ${fmt(percentile(result.latencies, 50), 2).padStart(6)}   ${fmt(percentile(result.latencies, 99), 2).padStart(6)}`,
      );
    }
  } finally {
    await storage.close();
  }
} finally {
  await server.stop();
}

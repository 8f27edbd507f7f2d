/**
 * Apply throughput: kv `set` entries (keys repeating every 1,000) applied
 * through PgStateMachine (one statement per batch, set-based runs) and
 * through the per-statement apply it replaced (test/pg/reference-state-machine.ts),
 * on one embedded PostgreSQL (fsync on), with synchronous_commit on and off,
 * in batches of 1, 64 and 256.
 * Run: npx tsx test/bench/apply-bench.ts
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startPostgres } from '../../sidecar/src/pg/embedded.ts';
import { migrate } from '../../sidecar/src/pg/migrate.ts';
import { PgStateMachine } from '../../sidecar/src/pg/state-machine.ts';
import { ReferenceStateMachine } from '../pg/reference-state-machine.ts';
import { encodeCommand } from '../../sidecar/src/node/command.ts';
import { EntryKind, type Entry } from '../../sidecar/src/core/types.ts';

const dir = path.join(os.tmpdir(), `rale-apply-bench-${process.pid}`);
await fs.mkdir(dir, { recursive: true, mode: 0o755 });
const server = await startPostgres({ dataDir: path.join(dir, 'pg'), persistent: false });
try {
  const rows: string[] = [];
  let nextIndex = 1;
  for (const impl of ['per-statement', 'one statement'] as const) {
    for (const synchronousApply of [true, false]) {
      for (const batch of [1, 64, 256]) {
        const url = await server.createDatabase(`b_${impl === 'one statement' ? 'one' : 'per'}_${synchronousApply ? 'sync' : 'async'}_${batch}`);
        await migrate(url);
        const sm = impl === 'one statement' ? new PgStateMachine({ connection: url, synchronousApply }) : new ReferenceStateMachine({ connection: url, synchronousApply });
        nextIndex = 1;
        const total = batch === 1 ? 2000 : 20480;
        const started = performance.now();
        for (let done = 0; done < total; done += batch) {
          const entries: Entry[] = [];
          for (let k = 0; k < batch; k++) {
            const index = nextIndex++;
            entries.push({ index, term: 1, kind: EntryKind.Normal, data: encodeCommand({ id: `p${index}`, command: { op: 'set', key: `k${index % 1000}`, value: 'x'.repeat(200) } }) });
          }
          await sm.apply(entries);
        }
        const seconds = (performance.now() - started) / 1000;
        rows.push(`| ${impl} | ${synchronousApply ? 'on ' : 'off'} | ${String(batch).padStart(3)} | ${Math.round(total / seconds).toLocaleString('en').padStart(7)} |`);
        await sm.close();
      }
    }
  }
  console.log('| apply | synchronous_commit | entries per apply transaction | entries/s |');
  console.log('|---|---|---|---|');
  for (const r of rows) console.log(r);
} finally {
  await server.stop();
  await fs.rm(dir, { recursive: true, force: true });
}

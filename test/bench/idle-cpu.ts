/**
 * What a three-node cluster of sidecar processes costs when nobody writes:
 * CPU of each sidecar and each PostgreSQL server over an idle window.
 * Run: npx tsx test/bench/idle-cpu.ts [seconds=10]
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BenchCluster, sleep } from './suite/cluster.ts';
import { cleanup, installSignalHandlers } from './suite/cleanup.ts';
import { cpuPercent, cpuSnapshot, type CpuTarget } from './suite/cpu.ts';

const seconds = Number(process.argv[2] ?? 10);
installSignalHandlers();
const root = await fs.mkdtemp(path.join(os.tmpdir(), 'rale-idle-cpu-'));
await fs.chmod(root, 0o755);
try {
  const cluster = await BenchCluster.start(root, false);
  await cluster.leader();
  await sleep(3000);
  const targets: CpuTarget[] = cluster.nodes.flatMap((n) => [
    { label: `sidecar ${n.id}`, pid: n.sidecar.child.pid ?? 0, tree: false },
    { label: `pg ${n.id}`, pid: n.pg.pid, tree: true },
  ]);
  const a = await cpuSnapshot(targets);
  await sleep(seconds * 1000);
  const b = await cpuSnapshot(targets);
  for (const [label, pct] of Object.entries(cpuPercent(a, b))) console.log(`${label.padEnd(14)} ${pct.toFixed(1)} %`);
} finally {
  await cleanup();
  await fs.rm(root, { recursive: true, force: true });
}

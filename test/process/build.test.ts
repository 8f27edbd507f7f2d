/**
 * The compiled build (bin/build.js): the bundle is built, carries the
 * built-in bridges, is rebuilt when an input is newer, and a sidecar process
 * run from it still loads a TypeScript bridge by path (tsx registered on
 * demand). RaleError is recognised across module copies (the bundle's and a
 * bridge's own).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
// @ts-expect-error: bin/build.js is plain JavaScript without declarations
import { build, bundlePaths, ensureBundle, staleReason } from '../../bin/build.js';
import { RaleError, isRaleError } from '../../sidecar/src/errors.ts';
import { builtInBridges, loadBridgeModule } from '../../sidecar/src/plugins/loader.ts';
import { freePort, startPostgres, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { spawnSidecar, type SidecarProcess } from '../../sidecar/src/process/spawn.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

test('the bundle builds, records its inputs (the built-in bridges among them) and is rebuilt when an input is newer', async (t) => {
  const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rale-build-'));
  t.teardown(() => fs.rmSync(outDir, { recursive: true, force: true }));
  t.is(staleReason(outDir), 'no bundle yet');
  const bundle: string = await build(outDir);
  const { inputs } = bundlePaths(outDir) as { inputs: string };
  t.true(fs.statSync(bundle).size > 100_000);
  t.true(fs.existsSync(`${bundle}.map`), 'a source map beside it');
  const files = (JSON.parse(fs.readFileSync(inputs, 'utf8')) as { files: string[] }).files;
  for (const name of builtInBridges()) t.true(files.includes(`bridges/${name}/index.ts`), `bridge ${name} is in the bundle`);
  t.true(files.includes('sidecar/src/core/raft.ts'));
  t.is(staleReason(outDir), null, 'current right after the build');

  // An input newer than the bundle makes it stale; ensureBundle rebuilds it.
  const past = new Date(Date.now() - 3600_000);
  fs.utimesSync(bundle, past, past);
  t.regex(staleReason(outDir) ?? '', / changed$/);
  const ensured = (await ensureBundle(outDir)) as { bundle: string | null; built: boolean; problem: string | null };
  t.deepEqual(ensured, { bundle, built: true, problem: null });
  t.is(staleReason(outDir), null);
  const again = (await ensureBundle(outDir)) as { built: boolean };
  t.false(again.built, 'a current bundle is used as it is');

  // A recorded input that is gone makes it stale too.
  const record = JSON.parse(fs.readFileSync(inputs, 'utf8')) as { files: string[] };
  record.files.push('sidecar/src/no-such-file.ts');
  fs.writeFileSync(inputs, JSON.stringify(record));
  fs.utimesSync(bundle, new Date(), new Date());
  t.is(staleReason(outDir), 'sidecar/src/no-such-file.ts is gone');
});

test('the built-in bridges are exactly the folders of bridges/ with an index.ts, and each loads', async (t) => {
  const folders = fs
    .readdirSync(path.join(ROOT, 'bridges'), { withFileTypes: true })
    .filter((d) => d.isDirectory() && fs.existsSync(path.join(ROOT, 'bridges', d.name, 'index.ts')))
    .map((d) => d.name)
    .sort();
  t.deepEqual(builtInBridges(), folders);
  for (const name of folders) t.is((await loadBridgeModule({ name })).name, name);
});

test('a RaleError from another copy of the module is still a RaleError', async (t) => {
  const copy = (await import(`../../sidecar/src/errors.ts?copy=${Date.now()}`)) as typeof import('../../sidecar/src/errors.ts');
  t.not(copy.RaleError, RaleError, 'a separate module instance');
  const foreign = new copy.RaleError('NOT_LEADER', 'from a bridge');
  t.true(foreign instanceof RaleError);
  t.true(isRaleError(foreign, 'NOT_LEADER'));
  t.true(new RaleError('TIMEOUT', 'here') instanceof copy.RaleError);
  t.false(new Error('plain') instanceof RaleError);
  t.false(({ code: 'NOT_LEADER' } as unknown) instanceof RaleError);
});

test('a sidecar process runs from the bundle and loads a TypeScript bridge given by path', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'rale-build-sidecar-'));
  fs.chmodSync(root, 0o755);
  let server: PostgresInstance | null = null;
  let sidecar: SidecarProcess | null = null;
  const lines: string[] = [];
  t.teardown(async () => {
    await sidecar?.stop();
    await server?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });
  await ensureBundle();
  t.is(staleReason(), null, 'bin/rale.js will run the bundle');
  server = await startPostgres({ dataDir: path.join(root, 'pg'), port: await freePort(), persistent: false });
  const config = path.join(root, 'rale.json');
  fs.writeFileSync(config, JSON.stringify({ bridges: [{ module: path.join(ROOT, 'test/fixtures/bridges/loopback.ts') }] }));
  const ports = { peerPort: await freePort(), apiPort: await freePort() };
  sidecar = spawnSidecar({ id: 'n1', databaseUrl: server.connectionString, ...ports, members: { n1: ports }, bootstrap: ['n1'], clusterSecret: 'build-test-secret-0123456789', extraArgs: ['--config', config], onLine: (line) => lines.push(line) });
  await sidecar.waitHealthy(30_000).catch((err: Error) => {
    throw new Error(`${err.message}:\n${lines.join('\n')}`);
  });
  const health = (await (await fetch(`${sidecar.apiUrl}/api/v1/health`)).json()) as { checks: Record<string, { ok: boolean; detail: string }> };
  t.like(health.checks.bridge_loopback, { ok: true, detail: 'started=true' }, lines.join('\n'));
  t.false(lines.some((l) => l.includes('running from the TypeScript sources')), 'it ran the bundle');
});

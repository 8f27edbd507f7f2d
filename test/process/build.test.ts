/**
 * The compiled build (bin/build.js): the bundle is built, carries the
 * built-in bridges, is rebuilt when an input is newer, and a sidecar process
 * run from it still loads a TypeScript bridge by path (tsx registered on
 * demand). RaleError is recognised across module copies (the bundle's and a
 * bridge's own).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
// @ts-expect-error: bin/build.js is plain JavaScript without declarations
import { build, buildLibrary, bundlePaths, ensureBundle, staleReason } from '../../bin/build.js';
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

test('the library runs in plain Node from its bundle through the package name, and its declarations type-check a consumer', async (t) => {
  await buildLibrary(); // where package.json "exports" points (pretest builds it too)
  // A child without tsx: plain Node resolves 'rale' to the bundle (a package may import itself by name).
  const script = `
    import { Node, MemoryNetwork } from 'rale';
    const node = new Node({ id: 'a', transport: new MemoryNetwork().transport(), bootstrap: true, heartbeatInterval: 20, minElectionTimeout: 100 });
    await node.start();
    while (!node.isLeader()) await new Promise((resolve) => setTimeout(resolve, 10));
    const result = await node.command({ op: 'set', key: 'k', value: 1 });
    console.log(JSON.stringify({ resolved: import.meta.resolve('rale'), result, loaders: [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(' ')].filter((a) => /^--(import|loader|experimental-loader|require)/.test(a)) }));
    await node.stop();`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env: { ...process.env, NODE_OPTIONS: '' }, encoding: 'utf8', timeout: 30_000 });
  const answer = JSON.parse(out.trim().split('\n').at(-1) as string) as { resolved: string; result: unknown; loaders: string[] };
  t.true(answer.resolved.endsWith('/dist/sidecar/lib/index.mjs'), answer.resolved);
  t.deepEqual(answer.result, { ok: true });
  t.deepEqual(answer.loaders, [], 'no TypeScript loader in the child');

  // The declarations (npm run build) into a scratch folder, then a consumer checked against them.
  // Inside the repository (dist/ is ignored by git): the consumer resolves the dependencies the declarations name
  // (@grpc/grpc-js, pg) from node_modules, as an application that installed rale would.
  fs.mkdirSync(path.join(ROOT, 'dist'), { recursive: true });
  const scratch = fs.mkdtempSync(path.join(ROOT, 'dist', 'types-check-'));
  t.teardown(() => fs.rmSync(scratch, { recursive: true, force: true }));
  const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.types.json'), '--outDir', path.join(scratch, 'types')], { cwd: ROOT, encoding: 'utf8' });
  fs.writeFileSync(
    path.join(scratch, 'consumer.ts'),
    `import { MemoryNetwork, Node } from './types/index.js';\nconst node = new Node({ id: 'a', transport: new MemoryNetwork().transport(), bootstrap: true });\nconst term: number = node.status().term;\nconst wrong: string = node.status().term;\nexport { term, wrong };\n`,
  );
  fs.writeFileSync(
    path.join(scratch, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, typeRoots: [path.join(ROOT, 'node_modules/@types')], types: ['node'] }, files: ['consumer.ts'] }),
  );
  let report = '';
  try {
    execFileSync(process.execPath, [tsc, '-p', scratch], { cwd: scratch, encoding: 'utf8' });
  } catch (err) {
    report = String((err as { stdout?: string }).stdout ?? err);
  }
  // Exactly the one planted mistake: the declarations resolve and carry the real types.
  t.regex(report, /consumer\.ts\(4,7\): error TS2322: Type 'number' is not assignable to type 'string'/);
  t.is(report.trim().split('\n').filter((line) => line.includes('error TS')).length, 1, report);
});

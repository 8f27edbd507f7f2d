/**
 * The sidecar's configuration: a JSON file, then RALE_* environment
 * variables, then command-line flags, each overriding the one before, then
 * defaults. Everything is validated before anything starts, and every error
 * names the field that is wrong, what it holds, and what it should hold.
 *
 * The file's shape (every field but nodeId and databaseUrl is optional):
 *
 *   {
 *     "nodeId": "node1",
 *     "databaseUrl": "postgres://rale@127.0.0.1:5432/app",
 *     "peer":    { "listen": "127.0.0.1:7401", "advertise": "10.0.0.1:7401",
 *                  "secret": "...", "tls": { "cert": "node1.pem", "key": "node1.key", "ca": "ca.pem", "mutual": true } },
 *     "api":     { "listen": "127.0.0.1:8401", "advertise": "http://10.0.0.1:8401", "token": "...", "bodyLimitBytes": 1048576 },
 *     "cluster": { "bootstrap": ["node1", "node2", "node3"], "token": "prod-eu-1",
 *                  "peers": { "node2": { "peer": "10.0.0.2:7401", "api": "http://10.0.0.2:8401" } } },
 *     "raft":    { "tickMs": 50, "electionTicks": 10, "heartbeatTicks": 1, "snapshotEvery": 10000, "requestTimeoutMs": 5000 },
 *     "bridges": [ { "name": "phalanx", "options": { ... } }, { "module": "./my-bridge.js" } ],
 *     "logLevel": "info"
 *   }
 */
import fs from 'node:fs';
import path from 'node:path';
import type { NodeId } from '../core/types.ts';
import { MAX_CLUSTER_TOKEN_LENGTH } from '../node/cluster-id.ts';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface HostPort {
  host: string;
  port: number;
}

export interface PeerInfo {
  /** host:port of the node's peer (gRPC) server. */
  peer: string;
  /** Base URL of the node's REST API, if it has one this node may relay to. */
  api?: string;
}

export interface BridgeConfig {
  /** A built-in bridge (phalanx, coordinode, clusterconsensus) ... */
  name?: string;
  /** ... or a module path (relative to the config file) or package name exporting a bridge. */
  module?: string;
  /** Passed to the bridge as it is; the bridge validates it. */
  options: Record<string, unknown>;
}

export interface SidecarConfig {
  nodeId: NodeId;
  databaseUrl: string;
  peer: {
    listen: HostPort;
    /** host:port other nodes reach this node at. */
    advertise: string;
    secret?: string;
    tls?: { cert: string; key: string; ca: string; mutual: boolean; peerIdFromCert: boolean };
    maxMessageBytes: number;
  };
  api: {
    /** null: no REST API. */
    listen: HostPort | null;
    /** Base URL other nodes (and clients told where the leader is) reach this API at. */
    advertise?: string;
    token?: string;
    bodyLimitBytes: number;
  };
  cluster: {
    /** Voters of a brand-new cluster (this node among them); ignored once the database holds a log. */
    bootstrap?: NodeId[];
    /** Goes into the cluster id with the founders (node/cluster-id.ts); only used when founding. */
    token?: string;
    peers: Record<NodeId, PeerInfo>;
  };
  raft: {
    tickMs: number;
    electionTicks: number;
    heartbeatTicks: number;
    snapshotEvery: number;
    requestTimeoutMs: number;
    synchronousApply: boolean;
  };
  bridges: BridgeConfig[];
  logLevel: LogLevel;
  /** Where relative paths in the file are resolved from. */
  baseDir: string;
}

/** A configuration error: `field` is the dotted path of what is wrong. */
export class ConfigError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`configuration: ${field}: ${message}`);
    this.name = 'ConfigError';
  }
}

/** Defaults chosen for failover in about a second on a LAN (see sidecar DESIGN.md). */
export const DEFAULTS = {
  peerListen: '127.0.0.1:7400',
  apiListen: '127.0.0.1:8400',
  tickMs: 50,
  electionTicks: 10,
  heartbeatTicks: 1,
  snapshotEvery: 10_000,
  requestTimeoutMs: 5_000,
  bodyLimitBytes: 1024 * 1024,
  maxMessageBytes: 64 * 1024 * 1024,
} as const;

/** The same rule as the REST API's (http/validate.ts). */
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

/** The environment variables read, each with the field it sets. */
export const ENVIRONMENT: Record<string, string> = {
  RALE_CONFIG: '(the configuration file)',
  RALE_NODE_ID: 'nodeId',
  RALE_DATABASE_URL: 'databaseUrl',
  RALE_PEER_LISTEN: 'peer.listen',
  RALE_PEER_ADVERTISE: 'peer.advertise',
  RALE_CLUSTER_SECRET: 'peer.secret',
  RALE_API_LISTEN: 'api.listen',
  RALE_API_ADVERTISE: 'api.advertise',
  RALE_API_TOKEN: 'api.token',
  RALE_BOOTSTRAP: 'cluster.bootstrap',
  RALE_CLUSTER_TOKEN: 'cluster.token',
  RALE_PEERS: 'cluster.peers',
  RALE_TICK_MS: 'raft.tickMs',
  RALE_ELECTION_TICKS: 'raft.electionTicks',
  RALE_HEARTBEAT_TICKS: 'raft.heartbeatTicks',
  RALE_SNAPSHOT_EVERY: 'raft.snapshotEvery',
  RALE_LOG_LEVEL: 'logLevel',
};

/** Command-line flags of `rale start`, each with the field it sets. */
export const FLAGS: Record<string, string> = {
  '--config': '(the configuration file)',
  '--node-id': 'nodeId',
  '--database-url': 'databaseUrl',
  '--peer-listen': 'peer.listen',
  '--peer-advertise': 'peer.advertise',
  '--cluster-secret': 'peer.secret',
  '--api-listen': 'api.listen',
  '--api-advertise': 'api.advertise',
  '--api-token': 'api.token',
  '--bootstrap': 'cluster.bootstrap',
  '--cluster-token': 'cluster.token',
  '--peers': 'cluster.peers',
  '--tick-ms': 'raft.tickMs',
  '--election-ticks': 'raft.electionTicks',
  '--heartbeat-ticks': 'raft.heartbeatTicks',
  '--snapshot-every': 'raft.snapshotEvery',
  '--log-level': 'logLevel',
};

type Raw = Record<string, unknown>;

/**
 * Loads and validates the configuration. `argv` holds `--flag value` or
 * `--flag=value` pairs (what follows `rale start`); `env` is usually
 * process.env.
 */
export function loadConfig(argv: readonly string[], env: Record<string, string | undefined>): SidecarConfig {
  const flags = parseFlags(argv);
  // An empty RALE_CONFIG is unset, like every other RALE_* variable (compose's `${RALE_CONFIG:-}`).
  const file = flags.get('--config') ?? (env.RALE_CONFIG === '' ? undefined : env.RALE_CONFIG);
  let raw: Raw = {};
  let baseDir = process.cwd();
  if (file !== undefined) {
    raw = readConfigFile(file);
    baseDir = path.dirname(path.resolve(file));
  }
  // Environment, then flags, over the file: both set the same dotted fields.
  for (const [name, field] of Object.entries(ENVIRONMENT)) {
    const value = env[name];
    if (value !== undefined && value !== '' && !field.startsWith('(')) setField(raw, field, fromText(field, value, name));
  }
  for (const [flag, value] of flags) {
    const field = FLAGS[flag] as string;
    if (!field.startsWith('(')) setField(raw, field, fromText(field, value, flag));
  }
  return validateConfig(raw, baseDir);
}

export function readConfigFile(file: string): Raw {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(
      '(file)',
      `cannot read the configuration file ${path.resolve(file)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): check the path given by --config or RALE_CONFIG`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('(file)', `${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(parsed)) throw new ConfigError('(file)', `${file} must hold a JSON object, got ${describe(parsed)}`);
  return parsed;
}

function parseFlags(argv: readonly string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let k = 0; k < argv.length; k++) {
    const arg = argv[k] as string;
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (!arg.startsWith('--')) throw new ConfigError(arg, 'is not an option: rale start takes options only (--name value or --name=value; see rale start --help)');
    if (!Object.hasOwn(FLAGS, name)) {
      const near = nearest(name, Object.keys(FLAGS));
      throw new ConfigError(name, `unknown option${near !== undefined ? `; did you mean ${near}?` : ''} (the options are ${Object.keys(FLAGS).join(', ')})`);
    }
    let value: string | undefined;
    if (eq > 0) value = arg.slice(eq + 1);
    else {
      value = argv[k + 1];
      k++;
      // `--node-id --database-url ...`: the value is missing, not "--database-url".
      if (value !== undefined && Object.hasOwn(FLAGS, value.split('=')[0] ?? '')) value = undefined;
    }
    if (value === undefined) throw new ConfigError(name, `needs a value (${name} VALUE or ${name}=VALUE)`);
    flags.set(name, value);
  }
  return flags;
}

/** Turns an environment or flag string into the field's JSON value. */
function fromText(field: string, text: string, source: string): unknown {
  if (field === 'cluster.bootstrap') return text.split(',').map((s) => s.trim()).filter(Boolean);
  if (field === 'cluster.peers') return parsePeerList(text, source);
  if (field.startsWith('raft.')) {
    if (!/^-?\d+$/.test(text.trim())) throw new ConfigError(field, `${source} must be an integer, got ${JSON.stringify(text)}`);
    return Number(text);
  }
  return text;
}

/**
 * `node2=10.0.0.2:7401@http://10.0.0.2:8401,node3=10.0.0.3:7401`: each
 * member's peer address, and after `@` its REST API URL if any.
 */
export function parsePeerList(text: string, source = 'cluster.peers'): Record<string, { peer: string; api?: string }> {
  const peers: Record<string, { peer: string; api?: string }> = {};
  for (const item of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const match = /^([^=]+)=([^@]+)(?:@(.+))?$/.exec(item);
    if (match === null) {
      throw new ConfigError('cluster.peers', `${source}: ${JSON.stringify(item)} is not id=host:port or id=host:port@http://host:port`);
    }
    const [, id, peer, api] = match as unknown as [string, string, string, string | undefined];
    if (Object.hasOwn(peers, id)) throw new ConfigError('cluster.peers', `${source} names ${id} twice: give each member once`);
    peers[id] = api === undefined ? { peer } : { peer, api };
  }
  return peers;
}

function setField(raw: Raw, dotted: string, value: unknown): void {
  const parts = dotted.split('.');
  let target = raw;
  for (const part of parts.slice(0, -1)) {
    const next = target[part];
    if (!isObject(next)) target[part] = {};
    target = target[part] as Raw;
  }
  target[parts[parts.length - 1] as string] = value;
}

// ------------------------------------------------------------------ validation

function isObject(value: unknown): value is Raw {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? value.slice(0, 60) + '...' : value);
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${String(value)}`;
}

function onlyKeys(value: Raw, field: string, allowed: string[]): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      const where = field === '' ? key : `${field}.${key}`;
      const near = nearest(key, allowed);
      throw new ConfigError(where, `unknown field${near ? `; did you mean ${near}?` : `; the fields here are ${allowed.join(', ')}`}`);
    }
  }
}

/** The allowed name closest to a mistyped one (ignoring case, '-' and '_'; at most two edits apart), if any. */
function nearest(name: string, allowed: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of allowed) {
    const d = editDistance(norm(name), norm(candidate));
    // Two edits turn short names into anything: allow fewer edits than half the name's length.
    if (d < bestDistance && d * 2 < norm(candidate).length) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, k) => k);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length] as number;
}

function section(raw: Raw, key: string, allowed: string[]): Raw {
  const value = raw[key];
  if (value === undefined) return {};
  if (!isObject(value)) throw new ConfigError(key, `must be an object, got ${describe(value)}`);
  onlyKeys(value, key, allowed);
  return value;
}

function str(value: unknown, field: string, required: true): string;
function str(value: unknown, field: string, required?: false): string | undefined;
function str(value: unknown, field: string, required = false): string | undefined {
  if (value === undefined) {
    if (required) throw new ConfigError(field, 'is required');
    return undefined;
  }
  if (typeof value !== 'string' || value === '') throw new ConfigError(field, `must be a non-empty string, got ${describe(value)}`);
  return value;
}

function int(value: unknown, field: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(field, `must be an integer from ${min} to ${max}, got ${describe(value)}`);
  }
  return value;
}

function bool(value: unknown, field: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new ConfigError(field, `must be true or false, got ${describe(value)}`);
  return value;
}

function nodeId(value: unknown, field: string): NodeId {
  const id = str(value, field, true);
  if (!NODE_ID.test(id)) {
    throw new ConfigError(field, `${JSON.stringify(id)} is not a node id: use 1 to 128 letters, digits, '_', '.', ':' or '-', starting with a letter or digit`);
  }
  return id;
}

export function parseHostPort(value: unknown, field: string): HostPort {
  const text = str(value, field, true);
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (match === null || port > 65535) {
    throw new ConfigError(field, `${JSON.stringify(text)} is not host:port (for example 127.0.0.1:7401, or 0.0.0.0:7401 to listen everywhere)`);
  }
  const host = match[1] ?? match[2] ?? '';
  return { host: host === '' ? '0.0.0.0' : host, port };
}

function url(value: unknown, field: string): string | undefined {
  const text = str(value, field);
  if (text === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch {
    throw new ConfigError(field, `${JSON.stringify(text)} is not a URL (for example http://10.0.0.1:8401)`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new ConfigError(field, `must be an http or https URL, got ${JSON.stringify(text)}`);
  return text.replace(/\/+$/, '');
}

/** Checks a PostgreSQL connection URL (also used by `rale init`). */
export function postgresUrl(value: unknown, field: string): string {
  const text = str(value, field, true);
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch {
    throw new ConfigError(field, 'is not a URL; use postgres://user:password@host:port/database');
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new ConfigError(field, `must start with postgres:// or postgresql://, got ${parsed.protocol}//`);
  }
  return text;
}

/** Validates a configuration object (the file's JSON with environment and flags applied). */
export function validateConfig(raw: Raw, baseDir = process.cwd()): SidecarConfig {
  onlyKeys(raw, '', ['nodeId', 'databaseUrl', 'peer', 'api', 'cluster', 'raft', 'bridges', 'logLevel']);
  const id = nodeId(raw.nodeId, 'nodeId');
  const databaseUrl = postgresUrl(raw.databaseUrl, 'databaseUrl');

  const peerRaw = section(raw, 'peer', ['listen', 'advertise', 'secret', 'tls', 'maxMessageBytes']);
  const listen = parseHostPort(peerRaw.listen ?? DEFAULTS.peerListen, 'peer.listen');
  const advertise = str(peerRaw.advertise, 'peer.advertise');
  if (advertise !== undefined) parseHostPort(advertise, 'peer.advertise');
  if (advertise === undefined && (listen.host === '0.0.0.0' || listen.host === '::')) {
    throw new ConfigError('peer.advertise', `is required when peer.listen is ${listen.host}:${listen.port}: other nodes need an address they can reach`);
  }
  const secret = str(peerRaw.secret, 'peer.secret');
  if (secret !== undefined && !/^[\x20-\x7e]{16,}$/.test(secret)) {
    throw new ConfigError('peer.secret', 'must be at least 16 printable ASCII characters (it travels in gRPC metadata)');
  }
  let tls: SidecarConfig['peer']['tls'];
  if (peerRaw.tls !== undefined) {
    if (!isObject(peerRaw.tls)) throw new ConfigError('peer.tls', `must be an object, got ${describe(peerRaw.tls)}`);
    onlyKeys(peerRaw.tls, 'peer.tls', ['cert', 'key', 'ca', 'mutual', 'peerIdFromCert']);
    const file = (key: 'cert' | 'key' | 'ca') => {
      const p = path.resolve(baseDir, str((peerRaw.tls as Raw)[key], `peer.tls.${key}`, true));
      let problem: string | null = null;
      try {
        if (!fs.statSync(p).isFile()) problem = 'is not a file';
        else fs.accessSync(p, fs.constants.R_OK);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        problem = code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? (err as Error).message})`;
      }
      if (problem !== null) {
        throw new ConfigError(`peer.tls.${key}`, `${p} ${problem}: give the path of a PEM file this process can read (relative paths are resolved from the configuration file's folder)`);
      }
      return p;
    };
    tls = {
      cert: file('cert'),
      key: file('key'),
      ca: file('ca'),
      mutual: bool(peerRaw.tls.mutual, 'peer.tls.mutual', true),
      peerIdFromCert: bool(peerRaw.tls.peerIdFromCert, 'peer.tls.peerIdFromCert', true),
    };
  }
  const maxMessageBytes = int(peerRaw.maxMessageBytes, 'peer.maxMessageBytes', DEFAULTS.maxMessageBytes, 64 * 1024, 1024 * 1024 * 1024);

  const apiRaw = section(raw, 'api', ['listen', 'advertise', 'token', 'bodyLimitBytes']);
  const apiListen = apiRaw.listen === 'off' || apiRaw.listen === false ? null : parseHostPort(apiRaw.listen ?? DEFAULTS.apiListen, 'api.listen');
  const token = str(apiRaw.token, 'api.token');
  if (token !== undefined && token.length < 16) throw new ConfigError('api.token', 'must be at least 16 characters long');

  const clusterRaw = section(raw, 'cluster', ['bootstrap', 'token', 'peers']);
  const clusterToken = str(clusterRaw.token, 'cluster.token');
  if (clusterToken !== undefined && (clusterToken.length === 0 || clusterToken.length > MAX_CLUSTER_TOKEN_LENGTH)) {
    throw new ConfigError('cluster.token', `must be 1 to ${MAX_CLUSTER_TOKEN_LENGTH} characters long, got ${clusterToken.length}`);
  }
  let bootstrap: NodeId[] | undefined;
  if (clusterRaw.bootstrap !== undefined) {
    if (!Array.isArray(clusterRaw.bootstrap) || clusterRaw.bootstrap.length === 0) {
      throw new ConfigError('cluster.bootstrap', `must be a non-empty list of the founding voters' ids, got ${describe(clusterRaw.bootstrap)}`);
    }
    bootstrap = clusterRaw.bootstrap.map((v, k) => nodeId(v, `cluster.bootstrap[${k}]`));
    if (new Set(bootstrap).size !== bootstrap.length) throw new ConfigError('cluster.bootstrap', 'lists a node twice');
    if (!bootstrap.includes(id)) {
      throw new ConfigError('cluster.bootstrap', `does not include this node (${id}): only founding voters bootstrap; a new node is joined with \`rale members add\``);
    }
  }
  const peers: Record<NodeId, PeerInfo> = {};
  if (clusterRaw.peers !== undefined) {
    if (!isObject(clusterRaw.peers)) throw new ConfigError('cluster.peers', `must be an object of node id to {peer, api}, got ${describe(clusterRaw.peers)}`);
    for (const [peerId, info] of Object.entries(clusterRaw.peers)) {
      const field = `cluster.peers.${peerId}`;
      nodeId(peerId, field);
      if (!isObject(info)) throw new ConfigError(field, `must be an object {"peer": "host:port", "api": "http://..."}, got ${describe(info)}`);
      onlyKeys(info, field, ['peer', 'api']);
      const peerAddress = str(info.peer, `${field}.peer`, true);
      if (!/^[a-z][a-z0-9+.-]*:\/\//.test(peerAddress)) parseHostPort(peerAddress, `${field}.peer`);
      const api = url(info.api, `${field}.api`);
      peers[peerId] = api === undefined ? { peer: peerAddress } : { peer: peerAddress, api };
    }
  }
  const defaultAdvertise = `${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port}`;
  const self = Object.hasOwn(peers, id) ? peers[id] : undefined;
  if (self !== undefined && self.peer !== (advertise ?? defaultAdvertise)) {
    throw new ConfigError(
      `cluster.peers.${id}.peer`,
      `names this node (${id}) at ${self.peer}, but its peer.advertise is ${advertise ?? defaultAdvertise}: drop this node from cluster.peers, or make the two agree`,
    );
  }
  // A founder without an address in cluster.peers is not an error: bootstrap
  // only matters on an empty database, and a founder removed later is rightly
  // left out of the peers of a node restarted after that. The sidecar warns
  // when it actually bootstraps without an address for a founder.

  const raftRaw = section(raw, 'raft', ['tickMs', 'electionTicks', 'heartbeatTicks', 'snapshotEvery', 'requestTimeoutMs', 'synchronousApply']);
  const heartbeatTicks = int(raftRaw.heartbeatTicks, 'raft.heartbeatTicks', DEFAULTS.heartbeatTicks, 1, 1000);
  const electionTicks = int(raftRaw.electionTicks, 'raft.electionTicks', DEFAULTS.electionTicks, 2, 10_000);
  if (electionTicks <= heartbeatTicks * 2) {
    throw new ConfigError('raft.electionTicks', `must be more than twice raft.heartbeatTicks (${heartbeatTicks}), got ${electionTicks}, or followers time out between heartbeats`);
  }

  let bridges: BridgeConfig[] = [];
  if (raw.bridges !== undefined) {
    if (!Array.isArray(raw.bridges)) throw new ConfigError('bridges', `must be a list, got ${describe(raw.bridges)}`);
    bridges = raw.bridges.map((b, k) => {
      const field = `bridges[${k}]`;
      if (!isObject(b)) throw new ConfigError(field, `must be an object {"name": ...} or {"module": ...}, got ${describe(b)}`);
      onlyKeys(b, field, ['name', 'module', 'options']);
      const name = str(b.name, `${field}.name`);
      const module = str(b.module, `${field}.module`);
      if ((name === undefined) === (module === undefined)) throw new ConfigError(field, 'needs exactly one of name (a built-in bridge) or module (a path or package)');
      if (b.options !== undefined && !isObject(b.options)) throw new ConfigError(`${field}.options`, `must be an object, got ${describe(b.options)}`);
      const resolved = module !== undefined && (module.startsWith('.') || module.startsWith('/')) ? path.resolve(baseDir, module) : module;
      return { ...(name !== undefined ? { name } : {}), ...(resolved !== undefined ? { module: resolved } : {}), options: (b.options as Raw | undefined) ?? {} };
    });
  }

  const logLevel = raw.logLevel ?? 'info';
  if (logLevel !== 'debug' && logLevel !== 'info' && logLevel !== 'warn' && logLevel !== 'error') {
    throw new ConfigError('logLevel', `must be debug, info, warn or error, got ${describe(logLevel)}`);
  }

  return {
    nodeId: id,
    databaseUrl,
    peer: {
      listen,
      advertise: advertise ?? defaultAdvertise,
      ...(secret !== undefined ? { secret } : {}),
      ...(tls !== undefined ? { tls } : {}),
      maxMessageBytes,
    },
    api: {
      listen: apiListen,
      ...(url(apiRaw.advertise, 'api.advertise') !== undefined ? { advertise: url(apiRaw.advertise, 'api.advertise') } : {}),
      ...(token !== undefined ? { token } : {}),
      bodyLimitBytes: int(apiRaw.bodyLimitBytes, 'api.bodyLimitBytes', DEFAULTS.bodyLimitBytes, 1024, 256 * 1024 * 1024),
    },
    cluster: { ...(bootstrap !== undefined ? { bootstrap } : {}), ...(clusterToken !== undefined ? { token: clusterToken } : {}), peers },
    raft: {
      tickMs: int(raftRaw.tickMs, 'raft.tickMs', DEFAULTS.tickMs, 1, 10_000),
      electionTicks,
      heartbeatTicks,
      snapshotEvery: int(raftRaw.snapshotEvery, 'raft.snapshotEvery', DEFAULTS.snapshotEvery, 0, 1_000_000_000),
      requestTimeoutMs: int(raftRaw.requestTimeoutMs, 'raft.requestTimeoutMs', DEFAULTS.requestTimeoutMs, 10, 3_600_000),
      synchronousApply: bool(raftRaw.synchronousApply, 'raft.synchronousApply', false),
    },
    bridges,
    logLevel,
    baseDir,
  };
}

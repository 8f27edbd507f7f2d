/**
 * The `rale` command.
 *
 *   rale start [options]                    run the sidecar beside one PostgreSQL
 *   rale init --database-url URL            install or upgrade rale's SQL schema
 *   rale status                             the cluster as one node sees it
 *   rale propose '<json command>'           propose and wait until applied
 *   rale members [list]                     voters and learners
 *   rale members add <id> <host:port>       join a node (learner, catch up, voter)
 *   rale members remove <id>                remove a node (the leader too)
 *   rale transfer-leader <id>               hand leadership to a voter
 *   rale leader                             who leads
 *
 * The management commands talk to a node's REST API: --api URL (default
 * $RALE_API_URL or http://127.0.0.1:8400) and --token (default
 * $RALE_API_TOKEN). --json prints the API's answer as it is.
 */
import { ConfigError, FLAGS, ENVIRONMENT, loadConfig, postgresUrl } from '../process/config.ts';
import { createLogger } from '../process/logger.ts';
// The sidecar (gRPC, express, pg) and the migration runner are imported by the commands that use
// them: loading them costs about a second of CPU, which `rale status` and usage errors need not pay.

const USAGE = `usage: rale <command> [options]

commands:
  start [options]                 run the sidecar (see rale start --help)
  init --database-url URL [--json] install or upgrade rale's SQL schema in a database
                                  (rale start does it too; init lets a DBA do it first)
  status                          cluster status as seen by one node
  leader                          the current leader
  propose '<json>' [--id KEY]     propose a command, e.g. '{"op":"set","key":"k","value":1}'
  members [list]                  list voters and learners
  members add <id> <host:port>    join a node: learner, catch up, then voter
  members remove <id>             remove a node (the leader included)
  transfer-leader <id>            hand leadership to another voter

options of the management commands:
  --api URL      a node's REST API (default $RALE_API_URL or http://127.0.0.1:8400)
  --token T      bearer token (default $RALE_API_TOKEN)
  --json         print the API's JSON answer
`;

const START_USAGE = `usage: rale start [options]

Configuration comes from a JSON file (--config or $RALE_CONFIG), then the
environment, then these options, each overriding the one before:

${Object.entries(FLAGS)
  .map(([flag, field]) => `  ${flag.padEnd(18)} ${field}`)
  .join('\n')}

environment:
${Object.entries(ENVIRONMENT)
  .map(([name, field]) => `  ${name.padEnd(20)} ${field}`)
  .join('\n')}

RALE_PEERS / --peers: node2=10.0.0.2:7400@http://10.0.0.2:8400,node3=...
See docs/operations.md for the file format and every field.
`;

class UsageError extends Error {}

interface ApiTarget {
  api: string;
  token: string | undefined;
  json: boolean;
}

/** Splits `--name value` / `--name=value` options (the ones in `known`) from positional arguments. */
function splitArgs(args: string[], known: string[], booleans: string[] = []): { options: Map<string, string>; positional: string[] } {
  const options = new Map<string, string>();
  const positional: string[] = [];
  for (let k = 0; k < args.length; k++) {
    const arg = args[k] as string;
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (booleans.includes(name)) {
      options.set(name, 'true');
      continue;
    }
    if (!known.includes(name)) throw new UsageError(`unknown option ${name}; the options here are ${[...known, ...booleans].join(', ')}`);
    const value = eq > 0 ? arg.slice(eq + 1) : args[++k];
    if (value === undefined) throw new UsageError(`${name} needs a value`);
    options.set(name, value);
  }
  return { options, positional };
}

function apiTarget(options: Map<string, string>): ApiTarget {
  // Empty variables count as unset, as in the sidecar's configuration (compose's `${RALE_API_TOKEN:-}`).
  const api = (options.get('--api') ?? (process.env.RALE_API_URL || 'http://127.0.0.1:8400')).replace(/\/+$/, '');
  try {
    new URL(api);
  } catch {
    throw new UsageError(`--api ${JSON.stringify(api)} is not a URL (for example http://127.0.0.1:8400)`);
  }
  return { api, token: options.get('--token') ?? (process.env.RALE_API_TOKEN || undefined), json: options.get('--json') === 'true' };
}

/** Calls the REST API; on an error answer, throws the envelope's message and hint. */
async function call(
  target: ApiTarget,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 60_000,
  extraHeaders: Record<string, string> = {},
): Promise<Record<string, unknown>> {
  const headers: Record<string, string> = { accept: 'application/json', ...extraHeaders };
  if (target.token !== undefined) headers.authorization = `Bearer ${target.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(`${target.api}/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (err as Error).message;
    throw new Error(`cannot reach the rale API at ${target.api}: ${why}; is the sidecar running, and is that its API address? (--api or RALE_API_URL)`);
  }
  const text = await response.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new Error(`${target.api} answered ${response.status} with something other than JSON: ${text.slice(0, 200)}`);
  }
  if (!response.ok) {
    const error = (parsed.error ?? {}) as { code?: string; message?: string; hint?: string };
    throw new Error(`${error.code ?? response.status}: ${error.message ?? text}${error.hint ? `\nhint: ${error.hint}` : ''}`);
  }
  return parsed;
}

function print(target: ApiTarget, answer: Record<string, unknown>, human: () => string): void {
  console.log(target.json ? JSON.stringify(answer, null, 2) : human());
}

async function start(args: string[]): Promise<void> {
  if (args.includes('--help') || args.includes('-h')) {
    console.log(START_USAGE);
    return;
  }
  const config = loadConfig(args, process.env);
  const log = createLogger(config.nodeId, config.logLevel);
  // A bridge's stray rejection must not take consensus down with it: log it and go on.
  process.on('unhandledRejection', (reason) => log.error('process', `unhandled rejection: ${(reason as Error)?.stack ?? String(reason)}`));
  // A signal while starting (e.g. still waiting for PostgreSQL) ends the process at once: nothing
  // runs yet that needs a clean stop. Without a handler, a process that is PID 1 in a container
  // would ignore SIGTERM and wait for the runtime's SIGKILL.
  const early = (signal: string) => {
    log.info('sidecar', `${signal} while starting: exiting`);
    process.exit(0);
  };
  process.on('SIGTERM', early);
  process.on('SIGINT', early);
  const { Sidecar } = await import('../process/sidecar.ts');
  const sidecar = await Sidecar.start(config, log);
  process.off('SIGTERM', early);
  process.off('SIGINT', early);
  log.info('sidecar', 'started', { peer: `${config.peer.listen.host}:${sidecar.peerPort}`, api: sidecar.apiUrl() });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('sidecar', `${signal}: stopping`);
    const force = setTimeout(() => {
      log.error('sidecar', 'clean stop took more than 15 s; exiting anyway');
      process.exit(1);
    }, 15_000);
    force.unref();
    void sidecar.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function init(args: string[]): Promise<void> {
  const { options, positional } = splitArgs(args, ['--database-url'], ['--json']);
  if (positional.length > 0) throw new UsageError(`rale init takes no arguments (got ${positional.join(' ')}); give the database as --database-url postgres://...`);
  const given = options.get('--database-url') ?? (process.env.RALE_DATABASE_URL || undefined);
  if (given === undefined) throw new UsageError('rale init needs --database-url postgres://... (or RALE_DATABASE_URL)');
  const url = postgresUrl(given, '--database-url');
  const { migrate } = await import('../pg/migrate.ts');
  let result;
  try {
    result = await migrate(url);
  } catch (err) {
    const code = (err as { code?: string }).code;
    // Connection failures (node's ECONNREFUSED etc., PostgreSQL's class 08 and 28, no such database) carry a code.
    if (code !== undefined && /^(E[A-Z]+|08...|28...|3D000)$/.test(code)) {
      throw new Error(`cannot install the schema in ${redact(url)}: ${(err as Error).message} (${code}); is PostgreSQL running there, and are the user, password and database in --database-url right?`);
    }
    throw err;
  }
  if (options.get('--json') === 'true') console.log(JSON.stringify(result));
  else if (result.applied.length === 0) console.log(`schema rale is up to date (version ${result.to}); nothing to do`);
  else console.log(`schema rale upgraded from version ${result.from} to ${result.to} (applied ${result.applied.join(', ')})`);
}

/** A URL with its password hidden, for messages. */
function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  const common = ['--api', '--token'];
  if (command !== 'start' && (rest.includes('--help') || rest.includes('-h'))) {
    console.log(USAGE);
    return;
  }
  switch (command) {
    case 'start':
      return start(rest);
    case 'init':
      return init(rest);
    case 'status': {
      const { options } = splitArgs(rest, common, ['--json']);
      const target = apiTarget(options);
      const s = await call(target, 'GET', '/cluster/status');
      print(target, s, () => {
        const members = s.members as Array<{ node_id: string; role: string; address: string | null; leader: boolean }>;
        const replication = (s.replication ?? {}) as Record<string, { match_index: number; lag_entries: number; recently_active: boolean }>;
        const lines = [
          `node ${s.node_id}: ${s.role}, term ${s.term}, leader ${s.leader ?? '(none)'}, cluster ${s.cluster_id ?? '(no id)'}`,
          `commit ${s.commit_index}, applied ${s.applied_index}, log ${s.first_index}..${s.last_index}`,
          '',
          'member      role     address                 match     lag  active',
        ];
        for (const m of members) {
          const r = replication[m.node_id];
          lines.push(
            `${(m.node_id + (m.leader ? '*' : '')).padEnd(11)} ${m.role.padEnd(8)} ${(m.address ?? '-').padEnd(22)} ${String(r?.match_index ?? '-').padStart(6)} ${String(r?.lag_entries ?? '-').padStart(7)}  ${r === undefined ? '-' : r.recently_active ? 'yes' : 'NO'}`,
          );
        }
        return lines.join('\n');
      });
      return;
    }
    case 'leader': {
      const { options } = splitArgs(rest, common, ['--json']);
      const target = apiTarget(options);
      const l = await call(target, 'GET', '/consensus/leader');
      print(target, l, () => `${l.node_id} (term ${l.term}, peer address ${l.address ?? '?'}${l.api_url ? `, API ${l.api_url}` : ''})`);
      return;
    }
    case 'propose': {
      const { options, positional } = splitArgs(rest, [...common, '--id'], ['--json']);
      const target = apiTarget(options);
      if (positional.length !== 1) throw new UsageError('rale propose takes one JSON command, e.g. \'{"op":"set","key":"k","value":1}\'');
      let command: unknown;
      try {
        command = JSON.parse(positional[0] as string);
      } catch (err) {
        throw new UsageError(`the command is not JSON: ${(err as Error).message}`);
      }
      // An id makes a retried propose apply once (the API's Idempotency-Key).
      const key = options.get('--id');
      const answer = await call(target, 'POST', '/consensus/propose', { value: command }, 60_000, key === undefined ? {} : { 'idempotency-key': key });
      print(target, answer, () => `applied at index ${answer.index} (term ${answer.term}) as ${answer.proposal_id}; result ${JSON.stringify(answer.result)}`);
      return;
    }
    case 'members': {
      const [sub = 'list', ...more] = rest[0]?.startsWith('--') ? ['list', ...rest] : rest;
      const { options, positional } = splitArgs(more, common, ['--json']);
      const target = apiTarget(options);
      if (sub === 'list') {
        const s = await call(target, 'GET', '/cluster/status');
        const members = s.members as Array<{ node_id: string; role: string; address: string | null; leader: boolean }>;
        print(target, { members }, () => members.map((m) => `${m.node_id}\t${m.role}${m.leader ? ' (leader)' : ''}\t${m.address ?? '-'}`).join('\n'));
        return;
      }
      if (sub === 'add') {
        if (positional.length !== 2) throw new UsageError('rale members add <id> <host:port>: the new node\'s id and peer address');
        const answer = await call(target, 'POST', '/cluster/join', { node_id: positional[0], address: positional[1] }, 120_000);
        print(target, answer, () => `${answer.node_id} is a voter${answer.changed ? ` (promoted at index ${answer.index})` : ' already'}; voters ${(answer.voters as string[]).join(', ')}`);
        return;
      }
      if (sub === 'remove') {
        if (positional.length !== 1) throw new UsageError('rale members remove <id>');
        const answer = await call(target, 'DELETE', `/cluster/nodes/${encodeURIComponent(positional[0] as string)}`);
        print(target, answer, () => `${answer.node_id} removed at index ${answer.index}; voters ${(answer.voters as string[]).join(', ')}`);
        return;
      }
      throw new UsageError(`unknown members command ${JSON.stringify(sub)}: use list, add or remove`);
    }
    case 'transfer-leader': {
      const { options, positional } = splitArgs(rest, common, ['--json']);
      const target = apiTarget(options);
      if (positional.length !== 1) throw new UsageError('rale transfer-leader <id>: the voter to hand leadership to');
      const answer = await call(target, 'POST', '/consensus/transfer-leader', { node_id: positional[0] });
      print(target, answer, () => (answer.changed ? `leadership moved from ${answer.previous_leader} to ${answer.leader} (term ${answer.term})` : `${answer.leader} already leads`));
      return;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

main(process.argv.slice(2)).catch((err: Error) => {
  if (err instanceof UsageError) {
    console.error(`rale: ${err.message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (err instanceof ConfigError) {
    console.error(`rale: ${err.message}`);
    process.exit(2);
  }
  const details = (err as { details?: { field?: string } }).details;
  console.error(`rale: ${err.message}${details?.field ? ` (${details.field})` : ''}`);
  process.exit(1);
});

/**
 * Real rale clusters for tests, the nemesis run and benchmarks: N embedded
 * PostgreSQL servers, N `rale start` processes beside them, and every peer
 * link through a TCP proxy the caller controls (see proxy.ts and DESIGN.md).
 *
 *   const cluster = await startCluster({ name: 'failover', size: 3 });
 *   try {
 *     const leader = await cluster.leader();
 *     await cluster.killSidecar(leader);
 *     ...
 *   } finally {
 *     await cluster.stop();
 *   }
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { ensureTemplate, freePort, startPostgres, type PostgresInstance } from '../../sidecar/src/pg/embedded.ts';
import { spawnSidecar, type SidecarProcess } from '../../sidecar/src/process/spawn.ts';
import { ProxyMesh, LinkProxy, type CutMode } from './proxy.ts';

export interface ClusterOptions {
  /** Names the temporary folder (rale-cluster-<name>-*) and the log lines. */
  name: string;
  /** Founding voters: node1..nodeN. */
  size: number;
  /** Flags for every sidecar, e.g. ['--tick-ms', '20']. Defaults keep rale's own timers (50 ms x 10). */
  extraArgs?: string[];
  /** Bearer token of the REST API (default: none). */
  apiToken?: string;
  /** Keep at most this many log lines per node (default 20,000). */
  maxLogLines?: number;
}

export interface ClusterNode {
  readonly id: string;
  /** A founding voter (started with --bootstrap). */
  readonly founder: boolean;
  readonly dataDir: string;
  readonly pgPort: number;
  readonly peerPort: number;
  readonly apiPort: number;
  readonly apiUrl: string;
  /** The running PostgreSQL server, null while it is stopped. */
  postgres: PostgresInstance | null;
  /** The running sidecar process, null while it is killed or stopped. */
  sidecar: SidecarProcess | null;
  /** A pool on the node's database, for the test's own SQL (superuser). */
  readonly pool: pg.Pool;
  /** Still a member as far as the harness knows (false once removed). */
  member: boolean;
}

export interface ApiAnswer {
  status: number;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- tests read whatever fields they check
}

export interface SqlOutcome {
  status: string;
  index: number | null;
}

export const CLUSTER_SECRET = 'rale-test-cluster-secret-0123456789';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns something truthy; the error names what was awaited and the last thing seen. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 20_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const seen = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${seen})`);
    }
    await sleep(everyMs);
  }
}

/**
 * A port on 127.0.0.1 that is free now, chosen below the kernel's ephemeral
 * range. A port from listen(0) lies inside that range, where any outgoing
 * connection of the machine (pg clients, gRPC links, other tests) may take
 * it as its source port in the seconds before a sidecar binds it: measured
 * here as `EADDRINUSE` at start on a busy machine. Falls back to freePort().
 */
export async function quietPort(): Promise<number> {
  let low = 32768;
  try {
    low = Number((await fs.readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')).trim().split(/\s+/)[0]) || low;
  } catch {
    // not Linux: the usual default
  }
  const from = 10_000;
  if (low - from < 1_000) return freePort();
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = from + Math.floor(Math.random() * (low - from));
    const free = await new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.unref();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  return freePort();
}

/** Sidecars still running when the test process exits are killed with it (a crashed test must not leave them behind). */
const live = new Set<SidecarProcess>();
process.on('exit', () => {
  for (const s of live) s.child.kill('SIGKILL');
});

export class Cluster {
  readonly nodes = new Map<string, ClusterNode>();
  readonly mesh = new ProxyMesh();
  /** Shared ingress proxies of joined nodes (see DESIGN.md: everybody dials a joined node at its join address). */
  private readonly ingress = new Map<string, LinkProxy>();
  /** Every log line of every process, in arrival order, as `<node> <line>`. */
  private readonly lines: string[] = [];
  private dropped = 0;
  private stopped = false;

  private constructor(
    readonly options: ClusterOptions,
    readonly root: string,
  ) {}

  static async start(options: ClusterOptions): Promise<Cluster> {
    // Two test processes may pick the same free port in the same second: start again on other ports.
    for (let attempt = 1; ; attempt++) {
      try {
        return await Cluster.startOnce(options);
      } catch (err) {
        if (attempt >= 3 || !/EADDRINUSE/.test((err as Error).message)) throw err;
      }
    }
  }

  private static async startOnce(options: ClusterOptions): Promise<Cluster> {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), `rale-cluster-${options.name}-`));
    // PostgreSQL runs as the `postgres` user when we are root: it must be able to enter the folder.
    await fs.chmod(root, 0o755);
    const cluster = new Cluster(options, root);
    try {
      const ids = Array.from({ length: options.size }, (_, k) => `node${k + 1}`);
      await ensureTemplate();
      const servers = await Promise.all(ids.map((id) => cluster.startNewPostgres(id)));
      for (const [k, id] of ids.entries()) {
        const server = servers[k] as PostgresInstance;
        cluster.addNodeRecord(id, true, server, await quietPort(), await quietPort());
      }
      for (const from of ids) for (const to of ids) if (from !== to) await cluster.mesh.add(from, to, cluster.node(to).peerPort);
      for (const id of ids) cluster.spawn(id);
      await Promise.all(ids.map((id) => cluster.node(id).sidecar!.waitHealthy(60_000)));
    } catch (err) {
      const logs = cluster.tail(200);
      await cluster.stop();
      throw new Error(`the cluster did not start: ${(err as Error).message}\nlast log lines:\n${logs}`);
    }
    return cluster;
  }

  // ---------------------------------------------------------------- nodes

  node(id: string): ClusterNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no node ${id} in this cluster; it has ${[...this.nodes.keys()].join(', ')}`);
    return node;
  }

  /** Ids of the current members (founders and joined nodes not removed). */
  get members(): string[] {
    return [...this.nodes.values()].filter((n) => n.member).map((n) => n.id);
  }

  private addNodeRecord(id: string, founder: boolean, server: PostgresInstance, peerPort: number, apiPort: number): ClusterNode {
    const pool = new pg.Pool({ connectionString: server.connectionString, max: 4, connectionTimeoutMillis: 5_000 });
    // Idle connections die when a test stops the node's PostgreSQL: that is expected. So do checked-out
    // ones: a client whose server terminates it between two queries emits 'error' on itself, which,
    // unheard, crashed the test worker ("terminating connection due to administrator command", seen in CI
    // in postgres-down). Queries under way still fail through their own promises.
    pool.on('error', () => {});
    pool.on('connect', (client) => client.on('error', () => {}));
    const node: ClusterNode = {
      id,
      founder,
      dataDir: server.dataDir,
      pgPort: server.port,
      peerPort,
      apiPort,
      apiUrl: `http://127.0.0.1:${apiPort}`,
      postgres: server,
      sidecar: null,
      pool,
      // A joining node counts once its join succeeded (addNode).
      member: founder,
    };
    this.nodes.set(id, node);
    return node;
  }

  private record(id: string, line: string): void {
    this.lines.push(`${id} ${line}`);
    const max = (this.options.maxLogLines ?? 20_000) * Math.max(1, this.nodes.size);
    if (this.lines.length > max) {
      this.lines.splice(0, this.lines.length - max);
      this.dropped++;
    }
  }

  /** Where `id` dials `peer`: its own proxy for a founder, the shared ingress proxy for a joined node. */
  private dialAddress(id: string, peer: string): string {
    const ingress = this.ingress.get(peer);
    if (ingress !== undefined && !this.mesh.has(id, peer)) return `127.0.0.1:${ingress.port}`;
    return `127.0.0.1:${this.mesh.link(id, peer).port}`;
  }

  /** Starts the sidecar process of `id` (on its existing data, if any). */
  private spawn(id: string): SidecarProcess {
    const node = this.node(id);
    if (node.sidecar !== null) throw new Error(`the sidecar of ${id} already runs; kill or stop it first`);
    const members: Record<string, { peerPort: number; apiPort: number; peerAddress?: string }> = {};
    for (const other of this.nodes.values()) {
      // Founders stay in the peer list after their removal, as in an operator's config file: a founder's
      // --bootstrap names them all, and rale start refuses a founding voter without an address.
      if (!other.member && other.id !== id && !(node.founder && other.founder)) continue;
      members[other.id] = { peerPort: other.peerPort, apiPort: other.apiPort, ...(other.id !== id ? { peerAddress: this.dialAddress(id, other.id) } : {}) };
    }
    const founders = [...this.nodes.values()].filter((n) => n.founder).map((n) => n.id);
    const sidecar = spawnSidecar({
      id,
      databaseUrl: this.databaseUrl(id),
      peerPort: node.peerPort,
      apiPort: node.apiPort,
      members,
      ...(node.founder ? { bootstrap: founders } : {}),
      clusterSecret: CLUSTER_SECRET,
      ...(this.options.apiToken !== undefined ? { apiToken: this.options.apiToken } : {}),
      extraArgs: this.options.extraArgs ?? [],
      onLine: (line) => this.record(id, line),
    });
    live.add(sidecar);
    void sidecar.exited.then((code) => {
      live.delete(sidecar);
      this.record(id, `[harness] sidecar process exited (${code})`);
      if (node.sidecar === sidecar) node.sidecar = null;
    });
    node.sidecar = sidecar;
    this.record(id, `[harness] sidecar started, pid ${sidecar.child.pid}`);
    return sidecar;
  }

  /** A new node's PostgreSQL server, on a quiet port (another one if that was taken meanwhile). */
  private async startNewPostgres(id: string): Promise<PostgresInstance> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await startPostgres({ dataDir: path.join(this.root, id), port: await quietPort(), persistent: true, onLog: (line) => this.record(id, `[pg] ${line}`) });
      } catch (err) {
        if (attempt >= 5 || !/is in use/.test((err as Error).message)) throw err;
      }
    }
  }

  databaseUrl(id: string): string {
    return `postgres://postgres:rale@127.0.0.1:${this.node(id).pgPort}/postgres`;
  }

  /** SIGKILL the sidecar of `id`; resolves once it is gone. */
  async killSidecar(id: string): Promise<void> {
    const sidecar = this.node(id).sidecar;
    if (sidecar === null) return;
    this.record(id, '[harness] SIGKILL to the sidecar');
    await sidecar.kill();
    this.node(id).sidecar = null;
  }

  /** SIGTERM (clean stop) of the sidecar of `id`. */
  async stopSidecar(id: string): Promise<number | string | null> {
    const sidecar = this.node(id).sidecar;
    if (sidecar === null) return null;
    this.record(id, '[harness] SIGTERM to the sidecar');
    const code = await sidecar.stop(10_000);
    this.node(id).sidecar = null;
    return code;
  }

  /** Starts the sidecar of `id` again on its data; waits until healthy unless told not to. */
  async startSidecar(id: string, waitHealthy = true): Promise<void> {
    const sidecar = this.spawn(id);
    if (waitHealthy) await sidecar.waitHealthy(60_000);
  }

  /** Stops the PostgreSQL server of `id` (fast shutdown: its clients, the sidecar included, are disconnected). */
  async stopPostgres(id: string): Promise<void> {
    const node = this.node(id);
    if (node.postgres === null) return;
    this.record(id, '[harness] stopping PostgreSQL');
    await node.postgres.stop();
    node.postgres = null;
  }

  /** Starts the PostgreSQL server of `id` again, on the same data dir and port. */
  async startPostgres(id: string): Promise<void> {
    const node = this.node(id);
    if (node.postgres !== null) return;
    this.record(id, '[harness] starting PostgreSQL');
    node.postgres = await startPostgres({ dataDir: node.dataDir, port: node.pgPort, persistent: true, onLog: (line) => this.record(id, `[pg] ${line}`) });
  }

  // ---------------------------------------------------------------- links

  /** Cuts the links from `a` to `b` (one direction), or both directions with both = true. */
  cut(a: string, b: string, options: { both?: boolean; mode?: CutMode } = {}): void {
    for (const [from, to] of options.both ? [[a, b], [b, a]] : [[a, b]]) {
      this.record(from as string, `[harness] cut link ${from} -> ${to} (${options.mode ?? 'blackhole'})`);
      this.linkFor(from as string, to as string).cut(options.mode);
    }
  }

  heal(a: string, b: string, options: { both?: boolean } = {}): void {
    for (const [from, to] of options.both ? [[a, b], [b, a]] : [[a, b]]) this.linkFor(from as string, to as string).heal();
  }

  private linkFor(from: string, to: string): LinkProxy {
    if (this.mesh.has(from, to)) return this.mesh.link(from, to);
    if (this.ingress.has(to)) {
      throw new Error(
        `${to} joined the cluster, so every node dials it at its one join address: only all of its inbound links can be cut at once (isolate(${to}), or a partition that puts it alone)`,
      );
    }
    return this.mesh.link(from, to);
  }

  /** Cuts every link to and from `id`, both ways. */
  isolate(id: string, mode: CutMode = 'blackhole'): void {
    this.partition([[id], this.members.filter((m) => m !== id)], mode);
  }

  /**
   * Splits the members into groups that cannot talk to each other (links
   * within a group stay up). Nodes not listed keep every link.
   */
  partition(groups: string[][], mode: CutMode = 'blackhole'): void {
    const groupOf = new Map<string, number>();
    groups.forEach((g, k) => g.forEach((id) => groupOf.set(id, k)));
    this.record('harness', `[harness] partition ${groups.map((g) => `{${g.join(',')}}`).join(' | ')} (${mode})`);
    for (const [to, proxy] of this.ingress) {
      // A joined node's inbound links are one proxy: cut only if every other listed node is on another side.
      const others = [...groupOf.keys()].filter((id) => id !== to);
      const apart = others.filter((id) => groupOf.get(id) !== groupOf.get(to));
      if (apart.length === 0) continue;
      if (apart.length !== others.length) {
        throw new Error(`cannot partition ${groups.map((g) => g.join(',')).join(' | ')}: ${to} joined the cluster, so its inbound links can only be cut all together (put it alone)`);
      }
      proxy.cut(mode);
    }
    for (const from of groupOf.keys()) {
      for (const to of groupOf.keys()) {
        if (from !== to && groupOf.get(from) !== groupOf.get(to) && this.mesh.has(from, to)) this.mesh.link(from, to).cut(mode);
      }
    }
  }

  /** Heals every link. */
  healAll(): void {
    this.record('harness', '[harness] heal every link');
    this.mesh.healAll();
    for (const proxy of this.ingress.values()) proxy.heal();
  }

  // ---------------------------------------------------------------- REST

  async api(id: string, method: string, apiPath: string, body?: unknown, timeoutMs = 15_000, headers: Record<string, string> = {}): Promise<ApiAnswer> {
    const h: Record<string, string> = { accept: 'application/json', ...headers };
    if (this.options.apiToken !== undefined) h.authorization = `Bearer ${this.options.apiToken}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const response = await fetch(`${this.node(id).apiUrl}/api/v1${apiPath}`, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: kept as text
    }
    return { status: response.status, body: parsed };
  }

  /** GET /cluster/status of `id`, or null when its API does not answer (or answers an error). */
  async status(id: string): Promise<Record<string, any> | null> { // eslint-disable-line @typescript-eslint/no-explicit-any
    if (this.node(id).sidecar === null) return null;
    try {
      const answer = await this.api(id, 'GET', '/cluster/status', undefined, 2_000);
      return answer.status === 200 ? (answer.body as Record<string, unknown>) : null;
    } catch {
      return null;
    }
  }

  /**
   * The leader, as the nodes of `among` (default: running members) see it:
   * a node that says it leads, in the highest term any of them reports, and
   * that at least one other node of `among` follows in that term (unless it
   * is alone). Waits up to timeoutMs for one.
   */
  async leader(options: { among?: string[]; timeoutMs?: number; not?: string } = {}): Promise<string> {
    return waitFor(
      `a leader among ${(options.among ?? this.members).join(',')}${options.not ? ` other than ${options.not}` : ''}`,
      async () => {
        const ids = (options.among ?? this.members).filter((id) => this.node(id).sidecar !== null);
        const statuses = (await Promise.all(ids.map((id) => this.status(id)))).filter((s) => s !== null);
        if (statuses.length === 0) return null;
        const top = Math.max(...statuses.map((s) => s.term as number));
        const leaders = statuses.filter((s) => s.term === top && s.role === 'leader');
        if (leaders.length !== 1) return null;
        const id = leaders[0]!.node_id as string;
        if (id === options.not) return null;
        const followers = statuses.filter((s) => s.node_id !== id && s.term === top && s.leader === id);
        return followers.length > 0 || statuses.length === 1 ? id : null;
      },
      options.timeoutMs ?? 30_000,
      100,
    );
  }

  /** POST /consensus/propose on `id`; returns the answer as it is. */
  async restPropose(id: string, command: unknown, idempotencyKey?: string, timeoutMs = 15_000): Promise<ApiAnswer> {
    return this.api(id, 'POST', '/consensus/propose', { value: command }, timeoutMs, idempotencyKey === undefined ? {} : { 'idempotency-key': idempotencyKey });
  }

  // ---------------------------------------------------------------- SQL

  /**
   * `CALL rale.submit(command, NULL, waitMs)` on `id`: the outcome's status
   * ('applied' is an acknowledgement; 'timed_out' means unknown: it may
   * still apply). Rejects when the SQL itself fails (the database is down).
   */
  async sqlSubmit(id: string, command: unknown, waitMs = 5_000): Promise<SqlOutcome> {
    const client = await this.node(id).pool.connect();
    try {
      const { rows } = await client.query<{ outcome: string }>('CALL rale.submit($1::jsonb, NULL, $2)', [JSON.stringify(command), waitMs]);
      // The INOUT record comes back as text: (status,index,term,result,error).
      const match = /^\(([a-z_]+),(\d*),/.exec(rows[0]?.outcome ?? '');
      if (match === null) throw new Error(`rale.submit answered an outcome that is not (status,index,...): ${rows[0]?.outcome}`);
      return { status: match[1] as string, index: match[2] === '' ? null : Number(match[2]) };
    } finally {
      client.release();
    }
  }

  /**
   * Sets key = value through SQL on `id`, retrying (same key, same value, so
   * a retry cannot change the outcome) until one attempt is acknowledged.
   * Returns the write as acknowledged and the failed attempts before it.
   */
  async sqlWriteUntilAcked(id: string, key: string, value: number, timeoutMs = 30_000): Promise<{ write: AckedWrite; attempts: string[] }> {
    const attempts: string[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const outcome = await this.sqlSubmit(id, { op: 'set', key, value }, 3_000);
        if (outcome.status === 'applied') return { write: { key, value, node: id, via: 'sql' }, attempts };
        attempts.push(outcome.status);
      } catch (err) {
        attempts.push((err as Error).message);
      }
      if (Date.now() > deadline) throw new Error(`${key}=${value} was not acknowledged by ${id} within ${timeoutMs} ms; attempts: ${attempts.join(' | ')}`);
      await sleep(200);
    }
  }

  /** The key-value state of `id`'s database (rale.kv), key -> value. */
  async kv(id: string): Promise<Map<string, unknown>> {
    const { rows } = await this.node(id).pool.query<{ key: string; value: unknown }>('SELECT key, value FROM rale.kv ORDER BY key');
    return new Map(rows.map((r) => [r.key, r.value]));
  }

  async appliedIndex(id: string): Promise<number> {
    const { rows } = await this.node(id).pool.query<{ index: string }>('SELECT index FROM rale.applied');
    return Number(rows[0]?.index ?? 0);
  }

  /**
   * Waits until every node of `ids` (default: members) has applied the same
   * index and holds the same key-value state; returns that state.
   */
  async waitConverged(ids: string[] = this.members, timeoutMs = 30_000): Promise<Map<string, unknown>> {
    let detail = '';
    try {
      return await waitFor(
        `${ids.join(', ')} to converge`,
        async () => {
          const applied = await Promise.all(ids.map((id) => this.appliedIndex(id)));
          if (new Set(applied).size !== 1) {
            detail = `applied indexes ${ids.map((id, k) => `${id}=${applied[k]}`).join(' ')}`;
            return null;
          }
          const states = await Promise.all(ids.map((id) => this.kv(id)));
          const texts = states.map((s) => JSON.stringify([...s]));
          if (new Set(texts).size !== 1) {
            detail = `same applied index ${applied[0]} but different states`;
            return null;
          }
          return states[0] as Map<string, unknown>;
        },
        timeoutMs,
        100,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}; ${detail}`);
    }
  }

  // ---------------------------------------------------------------- membership

  /**
   * Adds a node: a new PostgreSQL server and a sidecar started without
   * bootstrap, then POST /cluster/join on `via` (default: a running member)
   * with the node's join address. Returns the join's answer.
   */
  async addNode(id: string, options: { via?: string; timeoutMs?: number } = {}): Promise<ApiAnswer> {
    if (this.nodes.has(id)) throw new Error(`the cluster already has a node ${id}`);
    const server = await this.startNewPostgres(id);
    const node = this.addNodeRecord(id, false, server, await quietPort(), await quietPort());
    // Every member dials a joined node at the one address given at join: a shared ingress proxy.
    const ingress = new LinkProxy(`*->${id}`, node.peerPort);
    await ingress.listen();
    this.ingress.set(id, ingress);
    for (const other of this.members) await this.mesh.add(id, other, this.node(other).peerPort);
    const sidecar = this.spawn(id);
    // Not healthy before it is joined (not a member yet): wait until its API answers at all.
    await waitFor(`the API of ${id} to answer`, async () => {
      if (sidecar.child.exitCode !== null) throw new Error(`the sidecar of ${id} exited (${sidecar.child.exitCode})`);
      const answer = await this.api(id, 'GET', '/health', undefined, 2_000);
      return answer.status === 200 || answer.status === 503;
    }, 60_000);
    const via = options.via ?? this.members.find((m) => m !== id && this.node(m).sidecar !== null);
    if (via === undefined) throw new Error(`no running member to join ${id} through`);
    this.record(id, `[harness] POST /cluster/join on ${via}`);
    const answer = await this.api(via, 'POST', '/cluster/join', { node_id: id, address: `127.0.0.1:${ingress.port}` }, options.timeoutMs ?? 90_000);
    if (answer.status === 200) node.member = true;
    return answer;
  }

  /** DELETE /cluster/nodes/{id} on `via` (default: the node itself). Marks it removed when the answer is 200. */
  async removeNode(id: string, via: string = id, timeoutMs = 30_000): Promise<ApiAnswer> {
    this.record(via, `[harness] DELETE /cluster/nodes/${id}`);
    const answer = await this.api(via, 'DELETE', `/cluster/nodes/${encodeURIComponent(id)}`, undefined, timeoutMs);
    if (answer.status === 200) this.node(id).member = false;
    return answer;
  }

  // ---------------------------------------------------------------- logs

  /** A position in the log, for logsSince (e.g. at the start of each test). */
  mark(): number {
    return this.dropped > 0 ? -1 : this.lines.length;
  }

  logsSince(mark: number): string {
    return (mark < 0 ? this.lines : this.lines.slice(mark)).join('\n');
  }

  tail(count: number): string {
    return this.lines.slice(-count).join('\n');
  }

  /**
   * What to print when a test failed: the log lines since `mark`, the last
   * `maxLines` of them, without PostgreSQL's routine chatter.
   */
  failureReport(mark: number, maxLines = 400): string {
    const lines = (mark < 0 ? this.lines : this.lines.slice(mark)).filter((l) => !/ \[pg\] .* LOG: /.test(l));
    const shown = lines.slice(-maxLines);
    return `---- cluster ${this.options.name}: ${shown.length} of ${lines.length} log lines since the test began ----\n${shown.join('\n')}\n---- end of cluster ${this.options.name} logs ----`;
  }

  // ---------------------------------------------------------------- teardown

  /** Stops everything this cluster started and deletes its data. Safe to call twice and after a failed start. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const debug = process.env.RALE_HARNESS_DEBUG ? (what: string) => process.stderr.write(`[harness ${this.options.name}] ${new Date().toISOString()} ${what}\n`) : () => {};
    debug('stopping');
    // SIGTERM first, so that a sidecar that hangs on a clean stop shows in the logs; SIGKILL after 5 s.
    await Promise.all(
      [...this.nodes.values()].map(async (n) => {
        const code = await n.sidecar?.stop(5_000);
        if (code === 'SIGKILL') this.record(n.id, '[harness] the sidecar did not stop within 5 s of SIGTERM and was killed');
      }),
    );
    debug('sidecars stopped');
    await Promise.all([...this.nodes.values()].map((n) => n.pool.end().catch(() => {})));
    debug('pools ended');
    await Promise.all([...this.nodes.values()].map((n) => n.postgres?.stop()));
    debug('postgres stopped');
    await this.mesh.close();
    await Promise.all([...this.ingress.values()].map((p) => p.close()));
    debug('proxies closed');
    await fs.rm(this.root, { recursive: true, force: true });
    debug('stopped');
  }
}

export function startCluster(options: ClusterOptions): Promise<Cluster> {
  return Cluster.start(options);
}

// ---------------------------------------------------------------- workload

export interface AckedWrite {
  key: string;
  value: number;
  node: string;
  via: 'sql' | 'rest';
}

/**
 * A background writer: sets a fresh key per write (w-<tag>-<n> = n) through
 * SQL on the nodes `targets()` names, in turn, and keeps every write that was
 * acknowledged (rale.submit said 'applied'). Failed and timed-out writes are
 * counted; they may or may not apply, and nothing is asserted about them.
 */
export class Writer {
  readonly acked: AckedWrite[] = [];
  readonly failures: string[] = [];
  private running = true;
  private loop: Promise<void>;
  private n = 0;

  constructor(
    private readonly cluster: Cluster,
    readonly tag: string,
    private readonly targets: () => string[],
    private readonly pauseMs = 20,
  ) {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (this.running) {
      const targets = this.targets().filter((id) => this.cluster.node(id).postgres !== null);
      if (targets.length === 0) {
        await sleep(100);
        continue;
      }
      const node = targets[this.n % targets.length] as string;
      const value = ++this.n;
      const key = `w-${this.tag}-${value}`;
      try {
        const outcome = await this.cluster.sqlSubmit(node, { op: 'set', key, value }, 3_000);
        if (outcome.status === 'applied') this.acked.push({ key, value, node, via: 'sql' });
        else this.failures.push(`${key} on ${node}: ${outcome.status}`);
      } catch (err) {
        this.failures.push(`${key} on ${node}: ${(err as Error).message}`);
        await sleep(100);
      }
      await sleep(this.pauseMs);
    }
  }

  /** Resolves once `count` more writes have been acknowledged. */
  async waitForAcks(count: number, timeoutMs = 30_000): Promise<void> {
    const target = this.acked.length + count;
    await waitFor(`${count} more acknowledged writes (${this.tag}; recent failures: ${this.failures.slice(-3).join(' | ')})`, () => this.acked.length >= target, timeoutMs);
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}

/** Acknowledged writes missing (or different) on `id`: empty when all are there. */
export async function missingWrites(cluster: Cluster, id: string, acked: AckedWrite[]): Promise<string[]> {
  const kv = await cluster.kv(id);
  return acked.filter((w) => kv.get(w.key) !== w.value).map((w) => `${w.key}=${w.value} (acknowledged by ${w.node} via ${w.via}) is ${kv.has(w.key) ? JSON.stringify(kv.get(w.key)) : 'missing'} on ${id}`);
}

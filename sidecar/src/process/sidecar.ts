/**
 * One rale sidecar: the process that sits beside one PostgreSQL. It runs
 *  - the Raft node on that database (PgNode: log, state machine, pump),
 *  - the peer transport (gRPC server and links to the other members),
 *  - the RALE REST API (express),
 *  - the bridges its configuration names,
 * and supervises the database: when PostgreSQL stops answering, the node
 * hands leadership away if it holds it, stops, and starts again from what is
 * in PostgreSQL once the database answers. The API stays up meanwhile and
 * /health says why the node cannot serve.
 */
import http from 'node:http';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { RaleError } from '../errors.ts';
import { Role, type NodeId } from '../core/types.ts';
import { createApi, type RaleApi } from '../http/api.ts';
import { PgNode } from '../pg/node.ts';
import { GrpcTransport } from '../transport/grpc.ts';
import { BRIDGE_CALL_TIMEOUT_MS, BridgeHost } from '../plugins/host.ts';
import { INFO_CALL, SidecarTransport, addressScheme, checkNodeInfo } from '../plugins/sidecar-transport.ts';
import type { SidecarConfig } from './config.ts';
import type { Logger } from './logger.ts';
import { SupervisedBackend } from './supervised-backend.ts';

/** SQLSTATE classes that waiting will not fix: wrong password, no such database, no such role. */
const FATAL_CONNECT_CODES = new Set(['28P01', '28000', '3D000', '42501']);

/** How often the database is pinged, and how many failed pings in a row stop the node. */
const DB_PING_EVERY_MS = 500;
const DB_PING_TIMEOUT_MS = 1_000;
const DB_FAILURES_TO_STOP = 2;
const RECONNECT_EVERY_MS = 1_000;
/** The core's default limits of one Append's entries and of one entry. */
const CORE_MESSAGE_BYTES = 1 << 20;

export type SidecarState = 'starting' | 'running' | 'recovering' | 'stopping' | 'stopped';

export class Sidecar {
  readonly id: NodeId;
  readonly backend: SupervisedBackend;
  readonly transport: SidecarTransport;
  readonly bridges: BridgeHost;
  readonly api: RaleApi | null;
  private state: SidecarState = 'starting';
  private httpServer: http.Server | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  /** The node's background errors, each repeat of one at most every 5 s (a lost database fails every poll). */
  /** REST API URLs of members that cluster.peers does not list (joined later), asked of them over the peer transport. */
  private readonly learnedApis = new Map<NodeId, string>();
  private readonly apiLookups = new Map<NodeId, number>();
  private readonly nodeErrors = new RepeatLimiter((where, message, repeats) => this.log.warn(where, repeats > 0 ? `${message} (and ${repeats} more times)` : message), 5_000);
  private recovery: Promise<void> | null = null;
  private failedPings = 0;
  private stopRequested = false;
  /** Members of the configuration last seen, and every node ever seen as a member (see isMember). */
  private lastMembers: NodeId[] = [];
  private readonly everMembers = new Set<NodeId>();

  private constructor(
    readonly config: SidecarConfig,
    private readonly log: Logger,
  ) {
    this.id = config.nodeId;
    this.backend = new SupervisedBackend(config.nodeId);
    const tls = config.peer.tls;
    const grpcTransport = new GrpcTransport({
      listen: config.peer.listen,
      ...(config.peer.secret !== undefined ? { clusterSecret: config.peer.secret } : {}),
      ...(tls !== undefined
        ? {
            tls: {
              cert: fs.readFileSync(tls.cert),
              key: fs.readFileSync(tls.key),
              ca: fs.readFileSync(tls.ca),
              requireClientCert: tls.mutual,
              peerIdFromCert: tls.peerIdFromCert,
            },
          }
        : {}),
      maxMessageBytes: config.peer.maxMessageBytes,
      peers: Object.fromEntries(Object.entries(config.cluster.peers).map(([id, p]) => [id, p.peer])),
      authorizePeer: (peer) => this.isMember(peer),
      onSecurityEvent: (e) =>
        log.warn('peer-auth', `refused a peer call: ${e.reason}`, { kind: e.kind, method: e.method, remote: e.remote, claimed: e.claimedId, suppressed: e.suppressed || undefined }),
      log: (level, message, fields) => log.log(level, 'transport', message, fields),
    });
    this.transport = new SidecarTransport(
      grpcTransport,
      config.nodeId,
      (owner, err) => this.bridges.reportErrorOf(owner, err, 'peer connection'),
      // Calls forwarded to a member (proposals) may wait a request timeout for their answer.
      Math.max(BRIDGE_CALL_TIMEOUT_MS, config.raft.requestTimeoutMs + 1_000),
    );
    this.transport.nodeInfo = () => ({ api: this.apiUrl() ?? null });
    const refusedAt = new Map<NodeId, number>();
    this.transport.authorizePeer = (peer) => {
      if (this.isMember(peer)) return null;
      const reason = `node ${peer} is not a member of node ${this.id}'s configuration: it was removed`;
      if (Date.now() - (refusedAt.get(peer) ?? 0) > 10_000) {
        refusedAt.set(peer, Date.now());
        log.warn('peer-auth', `refused a peer call: ${reason}`, { claimed: peer });
      }
      return reason;
    };
    this.api =
      config.api.listen === null
        ? null
        : createApi(this.backend, {
            ...(config.api.token !== undefined ? { token: config.api.token } : {}),
            bodyLimitBytes: config.api.bodyLimitBytes,
            requestTimeoutMs: config.raft.requestTimeoutMs,
            peerApiUrl: (peer) => (peer === this.id ? this.apiUrl() : (config.cluster.peers[peer]?.api ?? this.learnedApiUrl(peer))),
            onError: (err, req) => log.error('api', `${req.method} ${req.path} failed: ${(err as Error)?.stack ?? String(err)}`),
            extraHealthChecks: () => this.healthChecks(),
            extraMetrics: () => this.bridges.metrics(),
          });
    this.bridges = new BridgeHost({
      nodeId: config.nodeId,
      backend: this.backend,
      transport: this.transport,
      api: this.api,
      log,
      requestTimeoutMs: config.raft.requestTimeoutMs,
    });
    // Bridges may refuse membership changes their members cannot take (a participant that cannot vote).
    this.backend.membershipGuard = (change) => this.bridges.checkMembershipChange(change);
  }

  /**
   * Starts everything. Resolves once the servers listen and the node runs;
   * while PostgreSQL does not answer yet, it waits (logging why). Rejects on
   * what waiting cannot fix: a port taken, a wrong password, a bad bridge.
   */
  static async start(config: SidecarConfig, log: Logger): Promise<Sidecar> {
    const sidecar = new Sidecar(config, log);
    try {
      await sidecar.startServers();
      await sidecar.bridges.load(config.bridges);
      await sidecar.waitForDatabase();
      await sidecar.startNode();
      await sidecar.bridges.start();
      sidecar.watchdog = setInterval(() => void sidecar.pingDatabase(), DB_PING_EVERY_MS);
      return sidecar;
    } catch (err) {
      await sidecar.stop().catch(() => {});
      throw err;
    }
  }

  get status(): SidecarState {
    return this.state;
  }

  get node(): PgNode | null {
    return this.backend.node;
  }

  get peerPort(): number {
    return this.transport.base.port;
  }

  get apiPort(): number | null {
    const address = this.httpServer?.address();
    return address && typeof address === 'object' ? (address as AddressInfo).port : null;
  }

  /** The base URL of this node's REST API, as other nodes and clients should use it. */
  apiUrl(): string | undefined {
    if (this.config.api.advertise !== undefined) return this.config.api.advertise;
    const listen = this.config.api.listen;
    if (listen === null) return undefined;
    const host = listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host;
    return `http://${host.includes(':') ? `[${host}]` : host}:${this.apiPort ?? listen.port}`;
  }

  async stop(): Promise<void> {
    if (this.stopRequested) return;
    this.stopRequested = true;
    this.state = 'stopping';
    if (this.watchdog !== null) clearInterval(this.watchdog);
    const node = this.backend.node;
    if (node !== null) await this.handOffLeadership(node);
    await this.bridges.stop();
    this.backend.detach('it is shutting down');
    if (node !== null) await node.stop().catch((err: Error) => this.log.warn('node', `stopping the node: ${err.message}`));
    await this.recovery;
    this.api?.close();
    if (this.httpServer !== null) {
      const server = this.httpServer;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    }
    await this.transport.closeForGood();
    this.state = 'stopped';
    this.log.info('sidecar', 'stopped');
  }

  // ------------------------------------------------------------------ internals

  /**
   * The REST API URL of `peer` when cluster.peers does not give it (a member
   * that joined later): what it said when last asked, and a new question in
   * the background (at most every 2 s per peer), so that relaying to a
   * leader that joined later works from the next request on (and from the
   * first: the lookup also runs whenever a leader is elected).
   */
  private learnedApiUrl(peer: NodeId): string | undefined {
    const known = this.learnedApis.get(peer);
    if (Date.now() - (this.apiLookups.get(peer) ?? 0) > 2_000) void this.askApiUrl(peer);
    return known;
  }

  private async askApiUrl(peer: NodeId): Promise<void> {
    const address = this.backend.node?.raft.addressOf(peer);
    // Foreign members (a bridge's scheme) serve no rale calls.
    if (address === undefined || addressScheme(address) !== null || peer === this.id) return;
    this.apiLookups.set(peer, Date.now());
    const connection = this.transport.base.connect(this.id, peer, address);
    try {
      const info = checkNodeInfo(await connection.invoke(INFO_CALL, null));
      if (info?.api) this.learnedApis.set(peer, info.api);
    } catch {
      // An older rale, or unreachable now: asked again later.
    } finally {
      await connection.close().catch(() => {});
    }
  }

  /**
   * Whether a peer may call this node. Refused: a node this sidecar has seen
   * as a member that is no longer one (it was removed). Allowed: members, and
   * nodes never seen as members, since they may have been added by entries
   * this node has not received yet: a member that lagged behind a membership
   * change, or a node being joined, must hear from the leader the change
   * brought, or it never learns that change and stays behind for good. The
   * core's pre-vote and check-quorum keep such callers from disrupting a
   * working leader. Checked on every call (SidecarTransport), not only when
   * a connection opens.
   */
  private isMember(peer: NodeId): boolean {
    const members = this.currentMembers();
    return members.includes(peer) || !this.everMembers.has(peer);
  }

  /** The members of the attached node's configuration; while none is attached (a restart), the last ones seen. */
  private currentMembers(): NodeId[] {
    const node = this.backend.node;
    if (node === null) return this.lastMembers;
    try {
      const config = node.raft.status().config;
      this.lastMembers = [...config.voters, ...config.learners];
    } catch {
      return this.lastMembers; // stopped meanwhile
    }
    for (const id of this.lastMembers) this.everMembers.add(id);
    return this.lastMembers;
  }

  private async startServers(): Promise<void> {
    const peerPort = await this.transport.base.bind();
    await this.transport.open();
    this.log.info('transport', `peer server listening on ${this.config.peer.listen.host}:${peerPort}`, { advertise: this.config.peer.advertise });
    const listen = this.config.api.listen;
    if (this.api !== null && listen !== null) {
      const server = http.createServer(this.api.app);
      // Long enough for a forwarded proposal or a join that waits for catch-up; bounded so dead clients do not pile up.
      server.requestTimeout = 120_000;
      server.headersTimeout = 10_000;
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) =>
          reject(new RaleError('INVALID_ARGUMENT', `cannot listen for the REST API on ${listen.host}:${listen.port}: ${err.code ?? err.message}`, { field: 'api.listen' })),
        );
        server.listen(listen.port, listen.host, () => resolve());
      });
      this.httpServer = server;
      this.log.info('api', `REST API listening on ${this.apiUrl()}`, { auth: this.config.api.token !== undefined ? 'bearer' : 'none' });
    }
    if (this.config.peer.secret === undefined && this.config.peer.tls === undefined) {
      this.log.warn('transport', 'peer authentication is off: set peer.secret (or peer.tls) so that only members can vote and append');
    }
  }

  /** Waits until PostgreSQL accepts a connection; throws on errors that waiting does not fix. */
  private async waitForDatabase(): Promise<void> {
    let lastLogged = 0;
    for (;;) {
      if (this.stopRequested) throw new RaleError('STOPPED', 'stopped while waiting for PostgreSQL');
      const error = await this.tryConnect();
      if (error === null) return;
      const code = (error as { code?: string }).code;
      if (code !== undefined && FATAL_CONNECT_CODES.has(code)) {
        throw new RaleError('STORAGE', `PostgreSQL refused the connection (${code}): ${error.message}; fix databaseUrl`, { field: 'databaseUrl' });
      }
      // /health says why the node is not up yet, not merely that it is starting.
      this.backend.detach(`it is waiting for its PostgreSQL to answer (${error.message})`);
      if (Date.now() - lastLogged > 5_000) {
        this.log.warn('postgres', `waiting for PostgreSQL: ${error.message}`, { database: redact(this.config.databaseUrl) });
        lastLogged = Date.now();
      }
      await sleep(RECONNECT_EVERY_MS);
    }
  }

  private async tryConnect(): Promise<Error | null> {
    const client = new pg.Client({ connectionString: this.config.databaseUrl, connectionTimeoutMillis: 2_000 });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('SELECT 1');
      return null;
    } catch (err) {
      return err as Error;
    } finally {
      await client.end().catch(() => {});
    }
  }

  private async startNode(): Promise<void> {
    const { config, log } = this;
    const addresses: Record<NodeId, string> = { [config.nodeId]: config.peer.advertise };
    for (const [id, p] of Object.entries(config.cluster.peers)) addresses[id] = p.peer;
    const unreachableFounders = (config.cluster.bootstrap ?? []).filter((id) => addresses[id] === undefined);
    if (unreachableFounders.length > 0) {
      log.warn('config', `cluster.peers has no address for the founding voter(s) ${unreachableFounders.join(', ')}: a new cluster cannot reach them (ignore this if they were removed since)`);
    }
    const node = await PgNode.start({
      id: config.nodeId,
      connectionString: config.databaseUrl,
      // Its own view of the transport: a late stop of this node cannot detach the node that replaces it.
      transport: this.transport.forNode(),
      ...(config.cluster.bootstrap !== undefined ? { bootstrap: config.cluster.bootstrap } : {}),
      ...(config.cluster.token !== undefined ? { clusterToken: config.cluster.token } : {}),
      addresses,
      tickMs: config.raft.tickMs,
      core: {
        electionTicks: config.raft.electionTicks,
        heartbeatTicks: config.raft.heartbeatTicks,
        // Appends (at most one batch of entries, or one entry) must fit the peers' message limit with room for
        // framing; else an entry or a batch above it is refused by every peer and retransmitted forever.
        maxMessageBytes: Math.min(CORE_MESSAGE_BYTES, Math.floor(config.peer.maxMessageBytes / 2)),
        maxEntryBytes: Math.min(CORE_MESSAGE_BYTES, Math.floor(config.peer.maxMessageBytes / 2)),
      },
      snapshotEvery: config.raft.snapshotEvery,
      requestTimeoutMs: config.raft.requestTimeoutMs,
      synchronousApply: config.raft.synchronousApply,
      onError: (err, where) => this.nodeErrors.report(where, err.message),
    });
    if (this.stopRequested) {
      // stop() came while the node was starting (a restart under way): it must not outlive the sidecar.
      await node.stop().catch((err: Error) => log.warn('node', `stopping the node: ${err.message}`));
      throw new RaleError('STOPPED', 'the sidecar stopped while the node was starting');
    }
    node.raft.on('role', (role: Role) => log.info('raft', `role is now ${role}`, { term: safeTerm(node) }));
    node.raft.on('leader', (leader: NodeId | null) => {
      log.info('raft', leader === null ? 'no leader known' : `leader is ${leader}`, { term: safeTerm(node) });
      if (leader !== null && leader !== this.id && this.config.cluster.peers[leader]?.api === undefined) this.learnedApiUrl(leader);
    });
    node.raft.on('cluster-id', (id: string, how: string) =>
      log.info('raft', how === 'adopted' ? `joined cluster ${id} (the id a peer presented)` : `cluster id is ${id} (derived from the log's first entry)`, { cluster_id: id }),
    );
    node.raft.once('stopped', () => {
      if (this.backend.node === node && !this.stopRequested) this.recover(node, 'the Raft node stopped (its storage failed)');
    });
    this.failedPings = 0;
    this.backend.attach(node);
    this.currentMembers(); // what its log says the members are: from now on a removed one is refused
    this.state = 'running';
    const s = node.raft.status();
    log.info('raft', `node started at term ${s.term}`, { cluster_id: node.raft.clusterId ?? '(none yet: a peer that has one gives it; see rale.set_cluster_id for a cluster upgraded after compaction)', commit: s.commit, applied: s.applied, last_index: s.lastIndex, members: [...s.config.voters, ...s.config.learners].join(',') || '(none yet)' });
  }

  private async pingDatabase(): Promise<void> {
    const node = this.backend.node;
    if (node === null || this.state !== 'running') return;
    try {
      await this.backend.pingDatabase(DB_PING_TIMEOUT_MS);
      if (this.backend.node === node) this.failedPings = 0;
    } catch (err) {
      // A ping sent to a node that has been replaced since says nothing about the one serving now.
      if (this.backend.node !== node) return;
      this.failedPings++;
      if (this.failedPings >= DB_FAILURES_TO_STOP) this.recover(node, `PostgreSQL does not answer: ${(err as Error).message}`);
    }
  }

  /**
   * The database is gone: hand leadership to the most caught-up voter (so
   * writes resume at once rather than after an election timeout), stop the
   * node, and start it again once PostgreSQL answers.
   */
  private recover(node: PgNode, reason: string): void {
    // Only the node attached now is recovered: a late report about an earlier one must not detach its successor.
    if (this.recovery !== null || this.stopRequested || this.backend.node !== node) return;
    this.state = 'recovering';
    this.log.error('sidecar', `stopping the node: ${reason}; it restarts from PostgreSQL once the database answers`);
    this.recovery = (async () => {
      await this.handOffLeadership(node);
      this.backend.detach(`its PostgreSQL does not answer (${reason})`);
      await node.stop().catch(() => {});
      let lastLogged = Date.now();
      while (!this.stopRequested) {
        const error = await this.tryConnect();
        if (error !== null) {
          // The latest reason, for /health and for the log (every 5 s, not every attempt).
          this.backend.detach(`its PostgreSQL does not answer (${error.message}); the node restarts once it does`);
          if (Date.now() - lastLogged > 5_000) {
            this.log.warn('postgres', `still waiting for PostgreSQL: ${error.message}`, { database: redact(this.config.databaseUrl) });
            lastLogged = Date.now();
          }
        } else {
          try {
            await this.startNode();
            this.log.info('sidecar', 'PostgreSQL answers again: the node is back');
            break;
          } catch (err) {
            if (this.stopRequested) break;
            this.log.warn('sidecar', `restarting the node failed: ${(err as Error).message}`);
          }
        }
        await sleep(RECONNECT_EVERY_MS);
      }
    })().finally(() => {
      this.recovery = null;
    });
  }

  /**
   * If this node leads, asks the most caught-up, recently active voter to
   * take over (TimeoutNow: it campaigns at once instead of after an election
   * timeout) and waits briefly for it. Used before a planned stop and when the
   * database is lost, so that writes pause for a round trip, not a timeout.
   */
  private async handOffLeadership(node: PgNode): Promise<void> {
    try {
      const s = node.raft.status();
      if (s.role !== Role.Leader) return;
      const target = Object.entries(s.progress)
        .filter(([id, p]) => s.config.voters.includes(id) && id !== this.id && p.recentlyActive)
        .sort((a, b) => b[1].match - a[1].match)[0]?.[0];
      if (target === undefined) return;
      this.log.info('raft', `handing leadership to ${target}`);
      node.raft.transferLeadership(target);
      const deadline = Date.now() + Math.min(1_000, this.config.raft.tickMs * this.config.raft.electionTicks);
      while (Date.now() < deadline && node.raft.status().leader !== target) await sleep(10);
    } catch {
      // stopped meanwhile: nothing to hand over
    }
  }

  private healthChecks(): Record<string, { ok: boolean; detail: string; critical?: boolean }> {
    const checks: Record<string, { ok: boolean; detail: string; critical?: boolean }> = this.bridges.healthChecks();
    if (this.state === 'recovering') checks.sidecar = { ok: false, detail: 'the node is stopped until its PostgreSQL answers again' };
    return checks;
  }
}

function safeTerm(node: PgNode): number | undefined {
  try {
    return node.raft.status().term;
  } catch {
    return undefined;
  }
}

function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Logs a message at once, then its repeats (same `where` and text) at most
 * once per `everyMs`, with how many were held back. Memory is bounded: a
 * message not seen for 10 intervals is forgotten.
 */
export class RepeatLimiter {
  private readonly seen = new Map<string, { lastLogged: number; held: number }>();

  constructor(
    private readonly emit: (where: string, message: string, repeats: number) => void,
    private readonly everyMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  report(where: string, message: string): void {
    const at = this.now();
    const key = `${where}\u0000${message}`;
    const entry = this.seen.get(key);
    if (entry !== undefined && at - entry.lastLogged < this.everyMs) {
      entry.held++;
      return;
    }
    this.emit(where, message, entry?.held ?? 0);
    this.seen.set(key, { lastLogged: at, held: 0 });
    if (this.seen.size > 100) for (const [k, e] of this.seen) if (at - e.lastLogged > 10 * this.everyMs) this.seen.delete(k);
  }
}

/**
 * The RALE REST API (express 5), built over a small backend interface so
 * that it does not depend on how the node stores its state: node-api.ts
 * adapts a PgNode to it; tests or other engines can bring their own.
 *
 *   const api = createApi(pgNodeBackend(node), { token, peerApiUrl });
 *   http.createServer(api.app).listen(8080);
 *   api.mount('/bridges/phalanx', phalanxRouter);   // bridges add routes later
 *
 * Routes, bodies and answers are described in openapi.json (kept in step by
 * test/http/api.test.ts) and the choices behind them in DESIGN.md.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { CoreStatus } from '../core/raft.ts';
import { Role, type ConfigChange, type NodeId } from '../core/types.ts';
import type { ProposalOutcome } from '../node/raft-node.ts';
import { HttpError, envelopeOf, headersOf, toHttpError } from './errors.ts';
import { ApiMetrics, PROMETHEUS_CONTENT_TYPE } from './metrics.ts';
import * as v from './validate.ts';
import type { ProposableCommand } from './validate.ts';

export const API_BASE = '/api/v1';

/** A log entry as the API shows it (rale.log()). */
export interface LogEntryView {
  index: number;
  term: number;
  kind: 'normal' | 'noop' | 'config' | string;
  leader: NodeId | null;
  /** The entry's data as JSON: a command envelope {id, command}, a membership change, or null for a no-op. */
  payload: unknown;
}

/** What the API needs from a node. */
export interface ApiBackend {
  readonly id: NodeId;
  status(): CoreStatus;
  addressOf(id: NodeId): string | undefined;
  /** Resolves with the leader's id, waiting up to timeoutMs for an election; rejects NO_LEADER. */
  waitForLeader(timeoutMs: number): Promise<NodeId>;
  /** Refuses a command that SQL's rale.propose would refuse (size limit, unknown handler): throws HttpError. */
  checkCommand(command: ProposableCommand): Promise<void>;
  /** Proposes (forwarding to the leader from a follower) and resolves once applied on this node. */
  propose(command: ProposableCommand, id: string, timeoutMs: number): Promise<ProposalOutcome>;
  /**
   * A membership change (forwarded from a follower), resolved once applied on
   * this node. Waits out CONFIG_CHANGE_PENDING (another change committing)
   * within timeoutMs, as RaftNode does: it is refused before reaching the log.
   */
  changeMembership(change: ConfigChange, timeoutMs: number): Promise<ProposalOutcome>;
  readIndex(timeoutMs: number): Promise<number>;
  readBarrier(timeoutMs: number): Promise<number>;
  transferLeadership(target: NodeId): void;
  /** This node's cluster id (node/cluster-id.ts), or null while it has none. Optional: status says null without it. */
  clusterId?(): string | null;
  /** One key of the replicated kv state, read locally, with the applied index it reflects. */
  readKey(key: string): Promise<{ applied: number; entry: { value: unknown; version: number } | null }>;
  logEntries(from: number, limit: number): Promise<LogEntryView[]>;
  /**
   * Why a member may never be promoted to voter (its protocol cannot carry
   * what a vote needs: a bridge's learner-only members), or null. A join of
   * such a member stops at a caught-up learner.
   */
  promotionRefusal?(id: NodeId): string | null;
  /** Rejects unless this node's database answers within timeoutMs. */
  pingDatabase(timeoutMs: number): Promise<void>;
  on(event: 'role' | 'leader' | 'applied', listener: (...args: unknown[]) => void): unknown;
  off(event: 'role' | 'leader' | 'applied', listener: (...args: unknown[]) => void): unknown;
}

export interface ApiOptions {
  /** Bearer token required on every endpoint but GET /health. Unset: no authentication. */
  token?: string;
  /** Largest request body, in bytes. Default 1 MiB. */
  bodyLimitBytes?: number;
  /** How long a proposal, read barrier or membership step may take. Default 5,000 ms. */
  requestTimeoutMs?: number;
  /** How long a joining node may take to catch up before it is promoted. Default 30,000 ms. */
  joinTimeoutMs?: number;
  /** Budget of each /health check (database ping, leader contact). Default 1,000 ms. */
  healthTimeoutMs?: number;
  /**
   * Base URL (scheme://host:port[/prefix]) of another node's API, when known.
   * Lets this node relay what only the leader can do as a whole (join,
   * transfer-leader, a follower removing itself) and serve other nodes' logs.
   * Without it those requests answer 421 naming the node to ask.
   */
  peerApiUrl?: (id: NodeId) => string | undefined;
  /** Receives unexpected errors (answered 500 INTERNAL without their message). */
  onError?: (err: unknown, req: Request) => void;
  /**
   * More /health checks from the embedding process. A failing check makes the
   * node unhealthy (503) unless it says `critical: false` (a bridge plugin
   * that failed: the node still serves rale, so it stays in load balancers;
   * the check shows the failure).
   */
  extraHealthChecks?: () => Record<string, { ok: boolean; detail: string; critical?: boolean }>;
  /** More Prometheus text appended to /metrics (complete # HELP/# TYPE blocks). */
  extraMetrics?: () => string;
}

export interface RouteSpec {
  /** Lower-case HTTP method. */
  method: 'get' | 'post' | 'delete';
  /** Path under API_BASE in OpenAPI syntax (`/logs/{node_id}`). */
  path: string;
}

export interface RaleApi {
  /** The express app: pass it to http.createServer, or mount it in a bigger app. */
  readonly app: express.Express;
  readonly metrics: ApiMetrics;
  /** rale's own routes (what openapi.json documents). */
  readonly routes: readonly RouteSpec[];
  /**
   * Adds routes for a bridge or an extension, under `path`, ahead of the
   * API's not-found handler, so they work when added after createApi. Bodies
   * are not parsed for them (a bridge may speak msgpack); the bearer token
   * applies unless `auth: false` (foreign protocols may not send it). Throw
   * HttpError from a handler to answer with rale's error envelope.
   */
  mount(path: string, handler: RequestHandler | express.Router, options?: { auth?: boolean }): void;
  /** Detaches the API from the backend's events. */
  close(): void;
}

/** Set on a relayed request: the receiving node answers itself and never relays again. */
const RELAYED_BY = 'X-Rale-Relayed-By';
const RELAYED_TO = 'X-Rale-Relayed-To';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

export function createApi(backend: ApiBackend, options: ApiOptions = {}): RaleApi {
  const requestTimeoutMs = options.requestTimeoutMs ?? 5000;
  const joinTimeoutMs = options.joinTimeoutMs ?? 30_000;
  const healthTimeoutMs = options.healthTimeoutMs ?? 1000;
  const bodyLimit = options.bodyLimitBytes ?? 1024 * 1024;
  const tokenDigest = options.token !== undefined && options.token !== '' ? digest(options.token) : null;

  const metrics = new ApiMetrics(backend);
  const onStatus = () => {
    try {
      metrics.observeStatus(backend.status());
    } catch {
      // stopped: nothing to observe
    }
  };
  const onApplied = () => metrics.entriesApplied.inc();
  backend.on('role', onStatus);
  backend.on('leader', onStatus);
  backend.on('applied', onApplied);

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false); // answers describe a moving cluster: no conditional GETs

  app.use((req, res, next) => {
    res.on('finish', () => {
      const route = (req.route as { path?: string } | undefined)?.path ?? 'unmatched';
      metrics.requests.inc({ method: req.method, route, status: String(res.statusCode) });
    });
    next();
  });

  // ------------------------------------------------------------ helpers

  const requireAuth: RequestHandler = (req, _res, next) => {
    if (tokenDigest === null) return next();
    const match = /^Bearer +(\S+) *$/i.exec(req.get('authorization') ?? '');
    // Digests have equal lengths, so timingSafeEqual compares in constant time whatever was sent.
    if (match === null || !timingSafeEqual(digest(match[1] as string), tokenDigest)) {
      throw new HttpError(401, 'UNAUTHORIZED', match === null ? 'missing bearer token' : 'wrong bearer token');
    }
    next();
  };

  const leaderFacts = (leader: NodeId | null) => ({
    leader,
    leader_address: leader === null ? null : (backend.addressOf(leader) ?? null),
    leader_api: leader === null ? null : (options.peerApiUrl?.(leader) ?? null),
  });

  /** The error for "only the leader can do this, and this node could not relay it there". */
  const cannotRelay = (what: string, leader: NodeId) =>
    HttpError.of('NOT_LEADER', `node ${backend.id} is not the leader and cannot relay ${what} to it; send it to ${leader}`, leaderFacts(leader));

  /**
   * Relays the request to another node's API and passes its answer through.
   * Returns false when the URL of that node is unknown or the request was
   * already relayed once (a stale view of the leader must not bounce it).
   */
  async function relay(req: Request, res: Response, target: NodeId, timeoutMs: number): Promise<boolean> {
    if (req.get(RELAYED_BY) !== undefined) return false;
    const base = options.peerApiUrl?.(target);
    if (base === undefined) return false;
    const headers: Record<string, string> = { accept: 'application/json', [RELAYED_BY]: backend.id };
    const auth = req.get('authorization');
    if (auth !== undefined) headers.authorization = auth;
    const hasBody = req.method !== 'GET' && req.method !== 'DELETE' && req.method !== 'HEAD';
    if (hasBody) headers['content-type'] = 'application/json';
    let upstream: globalThis.Response;
    try {
      upstream = await fetch(base.replace(/\/+$/, '') + req.originalUrl, {
        method: req.method,
        headers,
        body: hasBody ? JSON.stringify(req.body) : undefined,
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      if ((err as Error).name === 'TimeoutError') {
        throw HttpError.of('TIMEOUT', `node ${target} did not answer the relayed request within ${timeoutMs} ms; its outcome is unknown`, { node_id: target });
      }
      throw new HttpError(502, 'PEER_UNREACHABLE', `node ${target} (${base}) could not be reached: ${(err as Error).message}`, { node_id: target });
    }
    const body = await upstream.text();
    res.status(upstream.status).set(RELAYED_TO, target);
    for (const h of ['content-type', 'retry-after', 'allow', 'www-authenticate']) {
      const value = upstream.headers.get(h);
      if (value !== null) res.set(h, value);
    }
    res.send(body);
    return true;
  }

  /** The leader, waiting through an election; this node's own id when it leads. */
  async function currentLeader(): Promise<NodeId> {
    const leader = backend.status().leader;
    return leader ?? backend.waitForLeader(requestTimeoutMs);
  }

  async function waitCaughtUp(id: NodeId): Promise<void> {
    const deadline = Date.now() + joinTimeoutMs;
    for (;;) {
      const s = backend.status();
      if (s.role !== Role.Leader) {
        throw HttpError.of('NOT_LEADER', `node ${backend.id} lost leadership while ${id} was catching up; ${id} stays a learner: join it again`, leaderFacts(s.leader));
      }
      const progress = s.progress[id];
      if (progress !== undefined && progress.match >= s.commit) return;
      if (Date.now() >= deadline) {
        throw HttpError.of('TIMEOUT', `learner ${id} did not catch up within ${joinTimeoutMs} ms; it stays a learner: POST /cluster/join again to finish the join`, {
          node_id: id,
          role: 'learner',
          match_index: progress?.match ?? 0,
          commit_index: s.commit,
        });
      }
      await sleep(10);
    }
  }

  const memberRole = (s: CoreStatus, id: NodeId): 'voter' | 'learner' | null =>
    s.config.voters.includes(id) ? 'voter' : s.config.learners.includes(id) ? 'learner' : null;

  const membership = (s: CoreStatus) => ({ voters: [...s.config.voters], learners: [...s.config.learners] });

  // ------------------------------------------------------------ handlers

  const routes: Array<RouteSpec & { handler: RequestHandler }> = [];
  const route = (method: RouteSpec['method'], path: string, handler: RequestHandler) => routes.push({ method, path, handler });

  route('get', '/cluster/status', (req, res) => {
    v.onlyQuery(req.query, []);
    const s = backend.status();
    const replication = Object.fromEntries(
      Object.entries(s.progress).map(([id, p]) => [
        id,
        { match_index: p.match, next_index: p.next, state: p.state, recently_active: p.recentlyActive, lag_entries: Math.max(0, s.lastIndex - p.match) },
      ]),
    );
    res.json({
      node_id: backend.id,
      cluster_id: backend.clusterId?.() ?? null,
      role: s.role,
      term: s.term,
      ...leaderFacts(s.leader),
      commit_index: s.commit,
      applied_index: s.applied,
      first_index: s.firstIndex,
      last_index: s.lastIndex,
      ...membership(s),
      members: [...s.config.voters, ...s.config.learners].map((id) => ({
        node_id: id,
        role: memberRole(s, id),
        address: backend.addressOf(id) ?? null,
        leader: id === s.leader,
      })),
      transfer_target: s.transferTarget,
      replication,
    });
  });

  route('post', '/cluster/join', async (req, res) => {
    const body = v.objectBody(req.body, ['node_id', 'address']);
    const id = v.nodeId(body.node_id, 'node_id');
    const address = v.address(body.address, 'address');
    let s = backend.status();
    if (memberRole(s, id) === 'voter') {
      // Idempotent: a retried join (or a join of a founding member) changes nothing.
      res.json({ node_id: id, address: backend.addressOf(id) ?? address, role: 'voter', changed: false, index: null, term: s.term, ...membership(s), ...leaderFacts(s.leader) });
      return;
    }
    // The catch-up watch needs the leader's view of the learner's log, so the whole join runs on the leader.
    const leader = await currentLeader();
    if (leader !== backend.id) {
      if (await relay(req, res, leader, joinTimeoutMs + 2 * requestTimeoutMs)) return;
      throw cannotRelay('a join', leader);
    }
    const added = memberRole(backend.status(), id) === null ? await backend.changeMembership({ type: 'addLearner', node: id, context: address }, requestTimeoutMs) : null;
    await waitCaughtUp(id);
    const refusal = backend.promotionRefusal?.(id) ?? null;
    if (refusal !== null) {
      s = backend.status();
      res.json({ node_id: id, address, role: 'learner', learner_reason: refusal, changed: added !== null, index: added?.index ?? null, term: s.term, ...membership(s), ...leaderFacts(s.leader) });
      return;
    }
    const promoted = await backend.changeMembership({ type: 'promote', node: id }, requestTimeoutMs);
    s = backend.status();
    res.json({ node_id: id, address, role: 'voter', changed: true, index: promoted.index, term: promoted.term, ...membership(s), ...leaderFacts(s.leader) });
  });

  route('delete', '/cluster/nodes/{node_id}', async (req, res) => {
    v.onlyQuery(req.query, []);
    const id = v.nodeId(req.params.node_id, 'node_id');
    const s = backend.status();
    if (memberRole(s, id) === null) throw new HttpError(404, 'UNKNOWN_NODE', `node ${id} is not a member of the cluster`, { node_id: id });
    if (id === backend.id && s.role !== Role.Leader) {
      // A removed follower stops receiving the log at once, so it would never
      // see its own removal commit: the leader must watch it instead.
      const leader = await currentLeader();
      if (await relay(req, res, leader, 2 * requestTimeoutMs)) return;
      throw cannotRelay(`the removal of ${id} itself`, leader);
    }
    const removed = await backend.changeMembership({ type: 'remove', node: id }, requestTimeoutMs);
    const after = backend.status();
    res.json({ node_id: id, removed: true, index: removed.index, term: removed.term, ...membership(after), ...leaderFacts(after.leader) });
  });

  route('get', '/consensus/leader', (req, res) => {
    v.onlyQuery(req.query, []);
    const s = backend.status();
    if (s.leader === null) throw HttpError.of('NO_LEADER', `node ${backend.id} knows no leader in term ${s.term}`, { term: s.term, leader: null });
    res.json({ node_id: s.leader, address: backend.addressOf(s.leader) ?? null, api_url: options.peerApiUrl?.(s.leader) ?? null, term: s.term, is_this_node: s.leader === backend.id });
  });

  route('post', '/consensus/propose', async (req, res) => {
    const { command, mapping } = v.proposeCommand(req.body);
    const key = v.idempotencyKey(req.headers['idempotency-key']);
    await backend.checkCommand(command);
    // The id makes the proposal exactly-once: a retry with the same Idempotency-Key applies once.
    const proposalId = `http:${key ?? randomUUID()}`;
    metrics.proposalsSubmitted.inc();
    const started = performance.now();
    let outcome: ProposalOutcome;
    try {
      outcome = await backend.propose(command, proposalId, requestTimeoutMs);
    } catch (err) {
      metrics.proposalsFailed.inc({ code: toHttpError(err).code });
      throw err;
    }
    metrics.applyLatency.observe((performance.now() - started) / 1000);
    if (outcome.status === 'failed') {
      metrics.proposalsFailed.inc({ code: 'APPLY_FAILED' });
      throw HttpError.of('APPLY_FAILED', `the command was applied at index ${outcome.index} and failed: ${outcome.error ?? 'unknown error'}`, {
        proposal_id: proposalId,
        index: outcome.index,
        term: outcome.term,
      });
    }
    res.json({
      proposal_id: proposalId,
      index: outcome.index,
      term: outcome.term,
      status: 'applied',
      result: outcome.result ?? null,
      proposed_as: mapping,
      command,
      leader: backend.status().leader,
    });
  });

  route('post', '/consensus/transfer-leader', async (req, res) => {
    const body = v.objectBody(req.body, ['node_id']);
    const target = v.nodeId(body.node_id, 'node_id');
    const s = backend.status();
    const role = memberRole(s, target);
    if (role === null) throw new HttpError(404, 'UNKNOWN_NODE', `node ${target} is not a member of the cluster`, { node_id: target });
    if (role !== 'voter') throw new HttpError(409, 'NOT_A_VOTER', `node ${target} is a learner and cannot lead`, { node_id: target });
    if (s.leader === target) {
      res.json({ leader: target, previous_leader: target, term: s.term, changed: false });
      return;
    }
    const leader = await currentLeader();
    if (leader !== backend.id) {
      // The transfer is the leader's own act (RaftNode does not forward it over the peer transport).
      if (await relay(req, res, leader, 2 * requestTimeoutMs)) return;
      throw cannotRelay('a leadership transfer', leader);
    }
    backend.transferLeadership(target);
    const deadline = Date.now() + requestTimeoutMs;
    for (;;) {
      const now = backend.status();
      if (now.leader === target) {
        res.json({ leader: target, previous_leader: backend.id, term: now.term, changed: true });
        return;
      }
      if (Date.now() >= deadline) {
        throw HttpError.of('TIMEOUT', `leadership did not move to ${target} within ${requestTimeoutMs} ms`, { node_id: target, ...leaderFacts(now.leader) });
      }
      await sleep(10);
    }
  });

  route('get', '/logs/{node_id}', async (req, res) => {
    v.onlyQuery(req.query, ['from', 'limit']);
    const id = v.nodeId(req.params.node_id, 'node_id');
    const from = v.intQuery(req.query, 'from', 1, 1, Number.MAX_SAFE_INTEGER);
    const limit = v.intQuery(req.query, 'limit', 100, 1, 1000);
    if (id !== backend.id) {
      const s = backend.status();
      if (memberRole(s, id) === null && backend.addressOf(id) === undefined) {
        throw new HttpError(404, 'UNKNOWN_NODE', `node ${id} is not a member of the cluster`, { node_id: id });
      }
      // Each node's log lives in its own database: only that node can read it.
      if (await relay(req, res, id, requestTimeoutMs)) return;
      throw new HttpError(421, 'WRONG_NODE', `node ${backend.id} serves only its own log; ask node ${id}`, {
        node_id: id,
        address: backend.addressOf(id) ?? null,
      });
    }
    const entries = await backend.logEntries(from, limit);
    const s = backend.status();
    const last = entries[entries.length - 1];
    res.json({
      node_id: backend.id,
      first_index: s.firstIndex,
      last_index: s.lastIndex,
      commit_index: s.commit,
      entries,
      next_from: entries.length === limit && last !== undefined ? last.index + 1 : null,
    });
  });

  route('get', '/kv/{key}', async (req, res) => {
    v.onlyQuery(req.query, ['consistency']);
    const key = v.key(req.params.key, 'key');
    const consistency = v.enumQuery(req.query, 'consistency', ['linearizable', 'local'] as const, 'linearizable');
    // Linearizable: confirm with a quorum that no newer write exists, and apply up to it, before reading locally.
    const readIndex = consistency === 'linearizable' ? await backend.readBarrier(requestTimeoutMs) : null;
    const { applied, entry } = await backend.readKey(key);
    if (entry === null) throw new HttpError(404, 'UNKNOWN_KEY', `no value is stored under the key ${JSON.stringify(key)}`, { key, consistency, read_index: readIndex });
    res.json({ key, value: entry.value, version: entry.version, consistency, read_index: readIndex, applied_index: applied });
  });

  route('get', '/health', async (req, res) => {
    v.onlyQuery(req.query, []);
    const checks: Record<string, { ok: boolean; detail: string }> = {};
    const reasons: string[] = [];
    const check = (name: string, ok: boolean, detail: string) => {
      checks[name] = { ok, detail };
      if (!ok) reasons.push(`${name}: ${detail}`);
    };
    let s: CoreStatus | null = null;
    try {
      s = backend.status();
    } catch (err) {
      check('raft', false, (err as Error).message);
    }
    const database = backend.pingDatabase(healthTimeoutMs).then(
      () => ({ ok: true, detail: 'answers' }),
      (err: Error) => ({ ok: false, detail: err.message }),
    );
    let contact: Promise<{ ok: boolean; detail: string }> | null = null;
    if (s !== null) {
      check('raft', true, `${s.role} in term ${s.term}`);
      const role = memberRole(s, backend.id);
      check('membership', role !== null, role ?? 'not a member of the cluster configuration (removed, or not joined yet)');
      check('leader', s.leader !== null, s.leader === null ? 'no leader known (an election is under way, or this node is cut off)' : `leader is ${s.leader}`);
      if (s.leader !== null) {
        // A ReadIndex round proves contact now: on a follower, the leader
        // answered; on the leader, a quorum acknowledged its leadership.
        contact = backend.readIndex(healthTimeoutMs).then(
          (index) => ({ ok: true, detail: `read index ${index} confirmed` }),
          (err: Error) => ({ ok: false, detail: `no contact with the leader's quorum: ${err.message}` }),
        );
      }
    }
    const db = await database;
    check('postgres', db.ok, db.detail);
    for (const [name, c] of Object.entries(options.extraHealthChecks?.() ?? {})) {
      if (c.critical === false) checks[name] = { ok: c.ok, detail: c.detail };
      else check(name, c.ok, c.detail);
    }
    if (contact !== null) {
      const c = await contact;
      check('leader_contact', c.ok, c.detail);
    }
    if (reasons.length > 0) {
      throw new HttpError(503, 'UNHEALTHY', `node ${backend.id} cannot serve: ${reasons.join('; ')}`, { node_id: backend.id, reasons, checks });
    }
    res.json({ status: 'ok', node_id: backend.id, role: s?.role, term: s?.term, leader: s?.leader, checks });
  });

  route('get', '/metrics', (req, res) => {
    v.onlyQuery(req.query, []);
    res.type(PROMETHEUS_CONTENT_TYPE).send(metrics.render() + (options.extraMetrics?.() ?? ''));
  });

  // ------------------------------------------------------------ wiring

  const openPaths = new Set([`${API_BASE}/health`]);
  app.use(API_BASE, (req, res, next) => (openPaths.has(req.baseUrl + req.path) ? next() : requireAuth(req, res, next)));
  // GET and DELETE take no body (none of their operations documents one): a body sent anyway is
  // ignored, not parsed, so it cannot turn a read into a 400, 413 or 415.
  const takesBody = (req: Request) => req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'DELETE';
  app.use(API_BASE, (req, _res, next) => {
    if (!takesBody(req)) return next();
    // express.json only parses JSON; any other body would reach handlers as "no body".
    const hasBody = req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
    if (hasBody && !req.is('application/json')) {
      throw new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', `the body must be JSON (Content-Type: application/json), got ${req.get('content-type') ?? 'no Content-Type'}`);
    }
    next();
  });
  // Not strict: a bare `"x"` body then gets "must be a JSON object, got string" rather than a parse error.
  const json = express.json({ limit: bodyLimit, strict: false });
  app.use(API_BASE, (req, res, next) => (takesBody(req) ? json(req, res, next) : next()));
  for (const r of routes) app[r.method](API_BASE + r.path.replace(/\{(\w+)\}/g, ':$1'), r.handler);

  const extensions = express.Router();
  app.use(extensions);

  // Unmatched: 405 when the path exists with other methods, else 404, both in the envelope.
  app.use((req, _res, next: NextFunction) => {
    const allowed = routes.filter((r) => matches(API_BASE + r.path, req.path)).map((r) => r.method.toUpperCase());
    if (allowed.length > 0) {
      if (allowed.includes('GET')) allowed.push('HEAD');
      next(new HttpError(405, 'METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${req.path}; use ${allowed.join(', ')}`, { allow: allowed }));
      return;
    }
    next(new HttpError(404, 'NOT_FOUND', `no endpoint ${req.method} ${req.path}`));
  });

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    let error = toHttpError(err);
    if (error.code === 'INTERNAL') options.onError?.(err, req);
    if (error.code === 'NOT_LEADER' && typeof error.details.leader === 'string' && error.details.leader_address === undefined) {
      // Engine errors name the leader; add where to find it.
      error = new HttpError(error.status, error.code, error.message, { ...error.details, ...leaderFacts(error.details.leader) }, error.hint);
    }
    if (res.headersSent) {
      res.end();
      return;
    }
    res.status(error.status).set(headersOf(error));
    if (error.code === 'METHOD_NOT_ALLOWED') res.set('Allow', (error.details.allow as string[]).join(', '));
    res.json(envelopeOf(error));
  });

  return {
    app,
    metrics,
    routes: routes.map(({ method, path }) => ({ method, path })),
    mount(path, handler, mountOptions = {}) {
      if (mountOptions.auth === false) extensions.use(path, handler);
      else extensions.use(path, requireAuth, handler);
    },
    close() {
      backend.off('role', onStatus);
      backend.off('leader', onStatus);
      backend.off('applied', onApplied);
    },
  };
}

/** Whether `path` matches `pattern` (OpenAPI syntax), segment by segment, as express's non-strict, case-insensitive routing does. */
function matches(pattern: string, path: string): boolean {
  const p = pattern.split('/').filter(Boolean);
  const s = path.split('/').filter(Boolean);
  return p.length === s.length && p.every((seg, k) => /^\{\w+\}$/.test(seg) || seg.toLowerCase() === (s[k] as string).toLowerCase());
}

/**
 * Runs the bridges a sidecar's configuration names: builds each one's
 * context, and contains it. Every call into a bridge is bounded in time and
 * caught; a failure is logged, counted (rale_bridge_errors_total) and shown
 * in /health, and the node goes on.
 */
import type * as grpc from '@grpc/grpc-js';
import type { NextFunction, Request, RequestHandler, Response, Router } from 'express';
import { RaleError } from '../errors.ts';
import { commandProblem, proposalIdProblem } from '../node/command-limits.ts';
import type { ConfigChange, NodeId } from '../core/types.ts';
import type { RaleApi } from '../http/api.ts';
import type { SupervisedBackend } from '../process/supervised-backend.ts';
import type { Logger } from '../process/logger.ts';
import { BRIDGE_API_VERSION, type Bridge, type BridgeContext, type BridgeMember, type BridgeModule, type BridgeStatus } from './bridge-api.ts';
import { loadBridgeModule } from './loader.ts';
import type { SidecarTransport } from './sidecar-transport.ts';

/** How long create, start, stop and health of a bridge may take. */
export const BRIDGE_CALL_TIMEOUT_MS = 10_000;

interface LoadedBridge {
  name: string;
  module: BridgeModule;
  bridge: Bridge | null;
  errors: number;
  lastError: string | null;
  /** Failed create or start: the bridge is not running. */
  failed: string | null;
}

export interface BridgeHostOptions {
  nodeId: NodeId;
  backend: SupervisedBackend;
  transport: SidecarTransport;
  /** The REST API, or null when the node runs without one (mountHttp then fails clearly). */
  api: RaleApi | null;
  log: Logger;
  requestTimeoutMs: number;
}

async function bounded<T>(work: () => T | Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      Promise.resolve().then(work),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not finish within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export class BridgeHost {
  private readonly bridges: LoadedBridge[] = [];

  constructor(private readonly options: BridgeHostOptions) {}

  /**
   * Loads and creates the configured bridges. A bridge that cannot be loaded
   * (a wrong name or path, a module of another API version) stops the start:
   * that is a configuration error. One whose create throws is kept as failed.
   */
  async load(configs: Array<{ name?: string; module?: string; options: Record<string, unknown> }>): Promise<void> {
    for (const config of configs) {
      const module = await loadBridgeModule(config);
      if (this.bridges.some((b) => b.name === module.name)) {
        throw new RaleError('INVALID_ARGUMENT', `bridge ${module.name} is configured twice`);
      }
      const loaded: LoadedBridge = { name: module.name, module, bridge: null, errors: 0, lastError: null, failed: null };
      this.bridges.push(loaded);
      try {
        loaded.bridge = await bounded(() => module.create(this.context(loaded, config.options)), BRIDGE_CALL_TIMEOUT_MS, `bridge ${module.name} create`);
        this.options.log.info('bridge', `loaded bridge ${module.name}`);
      } catch (err) {
        this.fail(loaded, err, 'create');
      }
    }
  }

  async start(): Promise<void> {
    for (const b of this.bridges) {
      if (b.bridge === null || b.failed !== null) continue;
      const bridge = b.bridge;
      try {
        await bounded(() => bridge.start?.(), BRIDGE_CALL_TIMEOUT_MS, `bridge ${b.name} start`);
      } catch (err) {
        this.fail(b, err, 'start');
      }
    }
  }

  async stop(): Promise<void> {
    for (const b of [...this.bridges].reverse()) {
      const bridge = b.bridge;
      if (bridge === null) continue;
      try {
        await bounded(() => bridge.stop?.(), BRIDGE_CALL_TIMEOUT_MS, `bridge ${b.name} stop`);
      } catch (err) {
        this.reportError(b, err, 'stop');
      }
    }
  }

  /** /health checks: one per bridge, not critical (a failed bridge does not stop the node from serving rale). */
  healthChecks(): Record<string, { ok: boolean; detail: string; critical: false }> {
    const checks: Record<string, { ok: boolean; detail: string; critical: false }> = {};
    for (const b of this.bridges) {
      let check: { ok: boolean; detail: string };
      if (b.failed !== null) check = { ok: false, detail: `not running: ${b.failed}` };
      else {
        try {
          check = b.bridge?.health?.() ?? { ok: true, detail: 'running' };
        } catch (err) {
          this.reportError(b, err, 'health');
          check = { ok: false, detail: `health check threw: ${(err as Error).message}` };
        }
      }
      if (check.ok && b.lastError !== null) check = { ok: true, detail: `${check.detail}; ${b.errors} error(s), last: ${b.lastError}` };
      checks[`bridge_${b.name}`] = { ...check, critical: false };
    }
    return checks;
  }

  metrics(): string {
    if (this.bridges.length === 0) return '';
    const lines = [
      '# HELP rale_bridge_errors_total Failures of a bridge plugin (throws, timeouts, failed start), contained by the sidecar.',
      '# TYPE rale_bridge_errors_total counter',
      ...this.bridges.map((b) => `rale_bridge_errors_total{bridge="${b.name}"} ${b.errors}`),
      '# HELP rale_bridge_up Whether a bridge plugin is running (1) or failed to start (0).',
      '# TYPE rale_bridge_up gauge',
      ...this.bridges.map((b) => `rale_bridge_up{bridge="${b.name}"} ${b.failed === null && b.bridge !== null ? 1 : 0}`),
    ];
    return lines.join('\n') + '\n';
  }

  private fail(b: LoadedBridge, err: unknown, where: string): void {
    b.failed = `${where} failed: ${(err as Error)?.message ?? String(err)}`;
    this.reportError(b, err, where);
  }

  private reportError(b: LoadedBridge, err: unknown, where: string): void {
    b.errors++;
    b.lastError = `${where}: ${(err as Error)?.message ?? String(err)}`;
    this.options.log.error('bridge', `bridge ${b.name} failed in ${where}: ${(err as Error)?.message ?? String(err)}`, { stack: (err as Error)?.stack?.split('\n')[1]?.trim() });
  }

  /**
   * Asks every running bridge whether a membership change may be proposed
   * (Bridge.checkMembershipChange): a bridge refuses by throwing a RaleError,
   * which propagates; any other throw is counted against the bridge and
   * ignored, so a broken bridge cannot block membership changes.
   */
  checkMembershipChange(change: ConfigChange): void {
    let members: BridgeMember[] | null = null;
    for (const b of this.bridges) {
      const check = b.bridge?.checkMembershipChange;
      if (check === undefined || b.failed !== null) continue;
      if (members === null) {
        const node = this.options.backend.node;
        if (node === null) return; // the change itself fails with STOPPED
        const s = node.raft.status();
        members = [
          ...s.config.voters.map((id) => ({ id, role: 'voter' as const, address: node.raft.addressOf(id) ?? null })),
          ...s.config.learners.map((id) => ({ id, role: 'learner' as const, address: node.raft.addressOf(id) ?? null })),
        ];
      }
      try {
        check.call(b.bridge, change, members);
      } catch (err) {
        if (err instanceof RaleError) throw err;
        this.reportError(b, err, 'checkMembershipChange');
      }
    }
  }

  /** Counts an error of the bridge named `name` (used by the transport for connector failures). */
  reportErrorOf(name: string, err: unknown, where: string): void {
    const b = this.bridges.find((x) => x.name === name);
    if (b !== undefined) this.reportError(b, err, where);
  }

  private context(b: LoadedBridge, options: Record<string, unknown>): BridgeContext {
    const { backend, transport, log, requestTimeoutMs } = this.options;
    const raft = () => {
      const node = backend.node;
      if (node === null) throw new RaleError('STOPPED', `node ${this.options.nodeId} is not running (its PostgreSQL is unreachable)`);
      return node.raft;
    };
    const contain = (where: string) => (err: unknown) => this.reportError(b, err, where);
    return {
      apiVersion: BRIDGE_API_VERSION,
      name: b.name,
      nodeId: this.options.nodeId,
      options: Object.freeze({ ...options }),
      log: (level, message, fields) => log.log(level, `bridge:${b.name}`, message, fields),

      propose: async (command, opts = {}) => {
        // The limits SQL's rale.check_command applies to SQL and REST clients; bridges do not go through SQL.
        const problem = commandProblem(command) ?? (opts.id !== undefined ? proposalIdProblem(opts.id) : null);
        if (problem !== null) throw new RaleError('INVALID_ARGUMENT', `bridge ${b.name}: cannot propose this command: ${problem}`);
        return raft().command(command, { id: opts.id, timeoutMs: opts.timeoutMs ?? requestTimeoutMs });
      },
      read: async (key, consistency, timeoutMs = requestTimeoutMs) => {
        if (consistency === 'linearizable') await raft().readBarrier(timeoutMs);
        const { entry } = await backend.readKey(key);
        return entry;
      },
      kvScan: async (limit) => {
        const node = backend.node;
        if (node === null) throw new RaleError('STOPPED', `node ${this.options.nodeId} is not running (its PostgreSQL is unreachable)`);
        const max = Math.max(0, Math.min(Math.floor(limit), 100_000));
        const [count, rows] = await Promise.all([
          node.pool.query<{ n: string }>('SELECT count(*)::text AS n FROM rale.kv'),
          node.pool.query<{ key: string; value: unknown }>('SELECT key, value FROM rale.kv ORDER BY key LIMIT $1', [max]),
        ]);
        return { size: Number(count.rows[0]?.n ?? 0), entries: rows.rows };
      },
      status: (): BridgeStatus => {
        const r = raft();
        const s = r.status();
        return {
          id: s.id,
          role: s.role,
          term: s.term,
          leader: s.leader,
          leaderAddress: s.leader === null ? null : (r.addressOf(s.leader) ?? null),
          commitIndex: s.commit,
          appliedIndex: s.applied,
          lastIndex: s.lastIndex,
          members: [
            ...s.config.voters.map((id) => ({ id, role: 'voter' as const, address: r.addressOf(id) ?? null })),
            ...s.config.learners.map((id) => ({ id, role: 'learner' as const, address: r.addressOf(id) ?? null })),
          ],
        };
      },
      changeMembership: (change, timeoutMs = requestTimeoutMs) => raft().changeMembership(change, timeoutMs),
      transferLeadership: (target) => raft().transferLeadership(target),
      on: (event, listener) => {
        const safe = (...args: unknown[]) => {
          try {
            listener(...args);
          } catch (err) {
            contain(`${event} listener`)(err);
          }
        };
        backend.on(event, safe);
        return () => void backend.off(event, safe);
      },

      logEntries: async (from, limit) => {
        const rows = await backend.logEntries(from, limit);
        return rows.map((r) => ({ index: Number(r.index), term: Number(r.term), leader: r.leader ?? null }));
      },

      addGrpcService: (definition, implementation) => {
        transport.base.addService(definition, this.containGrpc(b, implementation), { authenticate: false });
      },
      mountHttp: (path, handler, opts = {}) => {
        if (this.options.api === null) throw new RaleError('INVALID_ARGUMENT', `bridge ${b.name} mounts HTTP routes, but this node runs without a REST API (api.listen is off)`);
        this.options.api.mount(path, this.containHttp(b, handler), opts);
      },

      registerPeerScheme: (scheme, connect) => transport.registerScheme(scheme, b.name, connect),
      deliver: (from, messages) => transport.deliver(from, messages),
      reportError: (err, where) => this.reportError(b, err, where),

      kvSnapshot: async () => {
        const node = backend.node;
        if (node === null) throw new RaleError('STOPPED', `node ${this.options.nodeId} is not running (its PostgreSQL is unreachable)`);
        const client = await node.pool.connect();
        try {
          // One transaction, so the applied index and the rows agree.
          await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
          const applied = (await client.query<{ index: string; term: string }>('SELECT index, term FROM rale.applied')).rows[0];
          const rows = (await client.query<{ key: string; value: unknown; version: string }>('SELECT key, value, version FROM rale.kv ORDER BY key')).rows;
          await client.query('COMMIT');
          return { index: Number(applied?.index ?? 0), term: Number(applied?.term ?? 0), kv: rows.map((r) => ({ key: r.key, value: r.value, version: Number(r.version) })) };
        } catch (err) {
          await client.query('ROLLBACK').catch(() => {});
          throw err;
        } finally {
          client.release();
        }
      },
    };
  }

  /** Wraps each handler so that a synchronous throw is counted and answered INTERNAL instead of escaping. */
  private containGrpc(b: LoadedBridge, implementation: grpc.UntypedServiceImplementation): grpc.UntypedServiceImplementation {
    const wrapped: grpc.UntypedServiceImplementation = {};
    for (const [method, handler] of Object.entries(implementation)) {
      wrapped[method] = ((call: unknown, callback?: (err: unknown, value?: unknown) => void) => {
        // A handler that answered and then failed must not answer twice; a streaming one that fails is ended with the error.
        let answered = false;
        const answer =
          callback === undefined
            ? undefined
            : (err: unknown, value?: unknown) => {
                if (answered) return;
                answered = true;
                callback(err, value);
              };
        const fail = (err: unknown) => {
          this.reportError(b, err, `gRPC ${method}`);
          const failure = { code: 13, details: `bridge ${b.name} failed: ${(err as Error)?.message ?? String(err)}` };
          if (answer !== undefined) answer(failure);
          else (call as { emit?: (e: string, x: unknown) => void }).emit?.('error', failure);
        };
        try {
          const result = (handler as (...args: unknown[]) => unknown)(call, answer);
          if (result instanceof Promise) result.catch(fail);
        } catch (err) {
          fail(err);
        }
      }) as grpc.UntypedHandleCall;
    }
    return wrapped;
  }

  private containHttp(b: LoadedBridge, handler: RequestHandler | Router): RequestHandler {
    return (req: Request, res: Response, next: NextFunction) => {
      const onError = (err: unknown) => {
        this.reportError(b, err, `HTTP ${req.method} ${req.path}`);
        next(err);
      };
      try {
        const result = (handler as RequestHandler)(req, res, (err?: unknown) => (err !== undefined && err !== 'route' && err !== 'router' ? onError(err) : next(err)));
        if (result instanceof Promise) result.catch(onError);
      } catch (err) {
        onError(err);
      }
    };
  }
}

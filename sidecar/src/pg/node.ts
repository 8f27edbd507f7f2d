/**
 * A rale node on PostgreSQL: the Raft driver with its log, hard state and
 * snapshots in the `rale` schema (PgLogStorage), its state machine in the
 * same database (PgStateMachine), the proposal pump that feeds SQL clients'
 * proposals into Raft, and the two small services that let SQL see the
 * node: the status publisher (rale.node_status, rale.members) and the read
 * service behind rale.read_barrier().
 */
import pg from 'pg';
import type { NodeId } from '../core/types.ts';
import { RaftNode, type RaftNodeOptions } from '../node/raft-node.ts';
import { PgLogStorage } from '../storage/pg-log.ts';
import { PgStateMachine } from './state-machine.ts';
import { ProposalPump } from './pump.ts';
import { migrate } from './migrate.ts';
import { pgTypes } from './types.ts';
import { RaleError } from '../errors.ts';

/** Pump batches held open at once (each on its own connection of the pump's pool). */
const PUMP_INFLIGHT = 10;

/**
 * One database, one node: a session advisory lock ("rale", 4) held by a
 * connection of its own for the node's whole life. Two sidecars attached to
 * one database would share one Raft log and hard state (two voters casting
 * one vote, one log written by two nodes): the second is refused at start.
 */
export const OWNER_LOCK_KEY: readonly [number, number] = [0x72616c65, 4];

/** RaftNode's options, with the log and state machine made from `connectionString`. */
export interface PgNodeOptions extends Omit<RaftNodeOptions, 'log' | 'stateMachine'> {
  /** The database of this node (a superuser or the owner of the rale schema). */
  connectionString: string;
  /** Commit apply transactions synchronously (see DESIGN: asynchronous is safe and faster). */
  synchronousApply?: boolean;
  /** How often node_status is refreshed while nothing changes. Default 100 ms. */
  statusEveryMs?: number;
  /** How long a proposal handed to Raft waits for its result here before the pump resubmits it. Default 3,000 ms. */
  resubmitAfterMs?: number;
  onError?: (err: Error, where: string) => void;
}

export class PgNode {
  readonly id: NodeId;
  readonly raft: RaftNode;
  readonly log: PgLogStorage;
  readonly stateMachine: PgStateMachine;
  readonly pool: pg.Pool;
  /** The proposal pump's own connections (see the constructor). */
  readonly pumpPool: pg.Pool;
  readonly pump: ProposalPump;
  private readonly options: PgNodeOptions;
  private statusTimer: NodeJS.Timeout | null = null;
  private readLoop: Promise<void> | null = null;
  private running = false;
  private publishedConfig = '';
  /** The connection that holds OWNER_LOCK_KEY (see claimDatabase). */
  private owner: pg.Client | null = null;

  private constructor(options: PgNodeOptions) {
    this.options = options;
    this.id = options.id;
    // Status, read barriers and the REST API's queries (check_command, reads).
    // Every connection names its part in pg_stat_activity (application_name "rale <node> <part>"), for DBAs.
    const named = (part: string) => ({ connectionString: options.connectionString, application_name: `rale ${options.id} ${part}`.slice(0, 63) });
    this.pool = new pg.Pool({ ...named('status'), max: 8, types: pgTypes });
    // The pump has a pool of its own: up to PUMP_INFLIGHT connections each
    // hold a batch's lock while its entries apply, plus one taking the next
    // batch (with its flag and cleanup) and the pick gate's. Sharing one pool of 12 with
    // the 8 held batches starved everything else under load (measured: the
    // pump waited up to 1.4 s for a connection, the REST API's check_command
    // queued behind held batches). Everything the pump writes is recoverable
    // (see pump.ts), so it commits asynchronously.
    this.pumpPool = new pg.Pool({ ...named('pump'), max: PUMP_INFLIGHT + 2, types: pgTypes, options: '-c synchronous_commit=off' });
    for (const [pool, name] of [
      [this.pool, 'pool'],
      [this.pumpPool, 'pump pool'],
    ] as const) {
      pool.on('error', (err) => this.reportError(err, name));
      // A checked-out client whose server dies emits 'error'; unheard, it would crash the process.
      pool.on('connect', (client) => client.on('error', (err) => this.reportError(err, `${name} client`)));
    }
    // The initial voters go into the log as its first entry (RaftNode does it), not into the storage's options.
    this.log = new PgLogStorage({ connection: named('log'), onIdleError: (err) => this.reportError(err, 'log') });
    this.stateMachine = new PgStateMachine({ connection: named('apply'), synchronousApply: options.synchronousApply });
    const { connectionString: _url, synchronousApply: _sync, statusEveryMs: _every, resubmitAfterMs, onError: _onError, ...raftOptions } = options;
    this.raft = new RaftNode({
      ...raftOptions,
      log: this.log,
      stateMachine: this.stateMachine,
      // Log and state in one database: snapshots are built and stored there, never held by this process.
      snapshotInPlace: (metaAt) => this.stateMachine.snapshotInPlace(metaAt),
    });
    this.raft.on('error', (err: Error) => this.reportError(err, 'raft'));
    this.pump = new ProposalPump({
      pool: this.pumpPool,
      maxInflightBatches: PUMP_INFLIGHT,
      ...(resubmitAfterMs !== undefined ? { resubmitAfterMs } : {}),
      connectionString: options.connectionString,
      applicationName: named('listen').application_name,
      node: this.raft,
      onError: (err) => this.reportError(err, 'pump'),
    });
  }

  /** Installs or upgrades the schema, then starts Raft and the services. */
  static async start(options: PgNodeOptions): Promise<PgNode> {
    const owner = await claimDatabase(options.connectionString, options.id);
    let node: PgNode;
    try {
      await migrate(options.connectionString);
      // Members that joined later are dialled at the address of their addLearner entry; once that entry is
      // compacted into a snapshot, only rale.members (published from the configuration) still has it.
      node = new PgNode({ ...options, addresses: { ...(await publishedAddresses(options.connectionString)), ...(options.addresses ?? {}) } });
    } catch (err) {
      await owner.end().catch(() => {});
      throw err;
    }
    node.owner = owner;
    // Losing the lock's connection (a DBA's pg_terminate_backend, a network cut) lets another node take the
    // database: stop Raft now (the sidecar restarts the node, which claims the database again).
    const lost = (why: string) => {
      if (!node.running || node.owner !== owner) return;
      node.reportError(new Error(`the connection holding this database for node ${options.id} ${why}: stopping the node`), 'owner');
      void node.raft.stop();
    };
    owner.on('error', (err) => lost(`failed (${err.message})`));
    owner.on('end', () => lost('ended'));
    try {
      await node.seedUnloggedRows();
      await node.raft.start();
      node.running = true;
      await node.publishStatus();
      node.raft.on('role', () => void node.publishStatus());
      node.statusTimer = setInterval(() => void node.publishStatus(), options.statusEveryMs ?? 100);
      await node.pump.start();
      node.readLoop = node.serveReadBarriers();
      return node;
    } catch (err) {
      // A start that fails halfway (the database went away meanwhile) must not leave a running Raft node, pools or timers behind: callers retry.
      node.running = true;
      await node.stop().catch(() => {});
      throw err;
    }
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.statusTimer !== null) clearInterval(this.statusTimer);
    await this.pump.stop().catch(() => {});
    await this.readLoop;
    await this.raft.stop();
    await this.log.close().catch(() => {});
    await this.stateMachine.close().catch(() => {});
    await this.pool.end().catch(() => {});
    await this.pumpPool.end().catch(() => {});
    // Last: until every write of this node has stopped, no other node may take the database.
    const owner = this.owner;
    this.owner = null;
    await owner?.end().catch(() => {});
  }

  /**
   * rale.pump and rale.read_rounds are UNLOGGED single-row tables: crash
   * recovery of PostgreSQL (a killed server, a power cut) empties them. Put
   * their row back before the services that UPDATE it start.
   */
  private async seedUnloggedRows(): Promise<void> {
    await this.pool.query(
      `INSERT INTO rale.pump (id, sleeping) VALUES (true, true) ON CONFLICT (id) DO NOTHING;
       INSERT INTO rale.read_rounds (id, ticket, read_index) VALUES (true, 0, 0) ON CONFLICT (id) DO NOTHING`,
    );
  }

  private reportError(err: Error, where: string): void {
    if (this.options.onError) this.options.onError(err, where);
  }

  /** Writes this node's role, term, leader and indexes, and its configuration when it changed, for SQL to read. */
  private async publishStatus(): Promise<void> {
    if (!this.running) return;
    try {
      const s = this.raft.status();
      const { rows } = await this.pool.query<{ inserted: boolean }>(
        `INSERT INTO rale.node_status (id, node_id, role, term, leader, leader_address, commit_index, applied_index, last_index, updated_at)
         VALUES (true, $1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp())
         ON CONFLICT (id) DO UPDATE SET node_id = $1, role = $2, term = $3, leader = $4, leader_address = $5,
           commit_index = $6, applied_index = $7, last_index = $8, updated_at = clock_timestamp()
         RETURNING (xmax = 0) AS inserted`,
        [s.id, s.role, s.term, s.leader, s.leader ? (this.raft.addressOf(s.leader) ?? null) : null, s.commit, s.applied, s.lastIndex],
      );
      // node_status is unlogged too: its row missing means PostgreSQL recovered from a crash under us
      // (or this is the first status): the other unlogged rows are gone as well.
      if (rows[0]?.inserted) await this.seedUnloggedRows();
      const config = JSON.stringify(s.config);
      if (config !== this.publishedConfig) {
        const ids = [...s.config.voters, ...s.config.learners];
        const roles = [...s.config.voters.map(() => 'voter'), ...s.config.learners.map(() => 'learner')];
        await this.pool.query(
          `WITH gone AS (DELETE FROM rale.members WHERE node_id <> ALL($1::text[]))
           INSERT INTO rale.members (node_id, role, address)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
           ON CONFLICT (node_id) DO UPDATE SET role = EXCLUDED.role, address = coalesce(EXCLUDED.address, rale.members.address), updated_at = clock_timestamp()`,
          [ids, roles, ids.map((id) => this.raft.addressOf(id) ?? null)],
        );
        this.publishedConfig = config;
      }
    } catch (err) {
      this.reportError(err as Error, 'status');
    }
  }

  /**
   * Serves rale.read_barrier(): SQL waiters take tickets from a sequence
   * (visible at once, no commit needed); for every new highest ticket this
   * runs one ReadIndex round, which started after those tickets were taken,
   * and publishes its index for them. Polls fast while barriers are being
   * asked for, slowly when idle.
   */
  private async serveReadBarriers(): Promise<void> {
    let served = 0;
    let lastDemand = 0;
    while (this.running) {
      try {
        const { rows } = await this.pool.query<{ last_value: number; is_called: boolean }>('SELECT last_value, is_called FROM rale.read_tickets');
        const row = rows[0];
        const newest = row?.is_called ? row.last_value : 0;
        if (newest > served) {
          const readIndex = await this.raft.readIndex();
          // An upsert: the row vanishes when PostgreSQL recovers from a crash under a running node (unlogged table).
          await this.pool.query(
            `INSERT INTO rale.read_rounds (id, ticket, read_index) VALUES (true, $1, $2)
             ON CONFLICT (id) DO UPDATE SET ticket = EXCLUDED.ticket, read_index = EXCLUDED.read_index`,
            [newest, readIndex],
          );
          served = newest;
          lastDemand = Date.now();
          continue;
        }
      } catch (err) {
        this.reportError(err as Error, 'read');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const busy = Date.now() - lastDemand < 2000;
      await new Promise((resolve) => setTimeout(resolve, busy ? 1 : 20));
    }
  }
}

/**
 * Takes the database for node `id` (OWNER_LOCK_KEY on a connection of its
 * own, named in pg_stat_activity as "rale node <id>"), or fails with who
 * holds it.
 */
async function claimDatabase(connectionString: string, id: NodeId): Promise<pg.Client> {
  const client = new pg.Client({ connectionString, application_name: `rale node ${id}`.slice(0, 63) });
  client.on('error', () => {}); // until the node listens (PgNode.start)
  try {
    await client.connect();
    const { rows } = await client.query<{ claimed: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS claimed', [...OWNER_LOCK_KEY]);
    if (rows[0]?.claimed === true) return client;
    const holder = await client.query<{ application_name: string; pid: number; client_addr: string | null; backend_start: Date }>(
      `SELECT a.application_name, a.pid, host(a.client_addr) AS client_addr, a.backend_start
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
       WHERE l.locktype = 'advisory' AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 2 AND l.granted`,
      [...OWNER_LOCK_KEY],
    );
    const h = holder.rows[0];
    const who = h === undefined ? 'another session' : `${h.application_name || 'a session'} (backend pid ${h.pid}${h.client_addr ? ` from ${h.client_addr}` : ''}, connected ${h.backend_start.toISOString()})`;
    throw new RaleError(
      'STORAGE',
      `this database is already in use by ${who}: each rale node needs a database of its own (two nodes on one database would share one Raft log and vote). Point databaseUrl at this node's own database, or stop the other sidecar`,
      { field: 'databaseUrl' },
    );
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
}

/** Peer addresses this node published in rale.members, from the config entries it saw (joined members' included). */
async function publishedAddresses(connectionString: string): Promise<Record<NodeId, string>> {
  const client = new pg.Client({ connectionString });
  client.on('error', () => {});
  await client.connect();
  try {
    const { rows } = await client.query<{ node_id: string; address: string }>('SELECT node_id, address FROM rale.members WHERE address IS NOT NULL');
    return Object.fromEntries(rows.map((r) => [r.node_id, r.address]));
  } finally {
    await client.end().catch(() => {});
  }
}

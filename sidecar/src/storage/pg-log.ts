/**
 * LogStorage in PostgreSQL: the tables of sql/migrations/0001_core.sql
 * (rale.log_entries, rale.hard_state, rale.snapshot) and 0006_cluster_id.sql
 * (rale.cluster_identity). The schema must have
 * been migrated first (sidecar/src/pg/migrate.ts; the sidecar does it on
 * start).
 *
 * Atomicity and durability (see sql/DESIGN.md): every write method runs as
 * ONE transaction on one pooled connection, and its promise resolves only
 * after COMMIT returned, with synchronous_commit on (forced on our
 * connections), i.e. after the commit record was flushed to disk. A crash
 * before that loses the whole transaction, never part of it.
 *
 * Writes (persist, saveSnapshot) are serialised in call order by a promise
 * chain: the Raft driver issues them in Ready order and they must land in
 * that order. Reads (load, entries, latestSnapshot) use any pooled
 * connection and only ever see committed data.
 *
 * One PgLogStorage owns its database's rale tables: two sidecars sharing a
 * database would be two nodes sharing one log.
 */
import pg from 'pg';
import type { ClusterConfig, Entry, HardState, Snapshot, SnapshotMeta, StorageState } from '../core/types.ts';
import { EntryKind } from '../core/types.ts';
import { RaleError } from '../errors.ts';
import { SCHEMA } from '../pg/migrate.ts';
import { pgTypes } from '../pg/types.ts';
import { checkEntries, copyConfig, EMPTY_CONFIG, entriesToWrite, INITIAL_HARD_STATE, termStartsOf } from './memory.ts';
import type { LogStorage, PersistBatch } from './types.ts';

export interface PgLogStorageOptions {
  /** A connection string, or a node-postgres pool configuration. */
  connection: string | pg.PoolConfig;
  /** Configuration reported while no snapshot is stored (see StorageState.snapshot). */
  bootstrap?: ClusterConfig;
  /** Pool size (default 4: one writer at a time, the rest for concurrent reads). */
  maxConnections?: number;
  /** Called with errors of idle pooled connections (e.g. the server restarted); the next query reconnects. */
  onIdleError?: (err: Error) => void;
}

const T = {
  log: `${SCHEMA}.log_entries`,
  hardState: `${SCHEMA}.hard_state`,
  snapshot: `${SCHEMA}.snapshot`,
  clusterIdentity: `${SCHEMA}.cluster_identity`,
};

// Statements run often are named: each connection parses and plans them
// once. Range conditions are written as closed ranges (BETWEEN) on purpose:
// with a plan made for unknown parameters, or before the table was ever
// analysed, PostgreSQL estimates `index >= $1` to match a third of the table
// and scans all of it, while a closed range gets the primary key index
// (measured: a seq scan per persist, growing with the log).
const SQL = {
  bounds: {
    name: 'rale-log-bounds',
    text: `SELECT (SELECT index FROM ${T.snapshot}) AS snapshot_index, (SELECT max(index) FROM ${T.log}) AS last_index`,
  },
  // Truncate on conflict: [$1, $2] is [first new index, current last index].
  truncate: { name: 'rale-log-truncate', text: `DELETE FROM ${T.log} WHERE index BETWEEN $1 AND $2` },
  // One statement for the whole batch: five arrays unnested in parallel into rows.
  insertEntries: {
    name: 'rale-log-insert',
    text:
      `INSERT INTO ${T.log} (index, term, kind, data, leader) ` +
      `SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::smallint[], $4::bytea[], $5::text[])`,
  },
  upsertHardState: {
    name: 'rale-hard-state-upsert',
    text:
      `INSERT INTO ${T.hardState} (id, term, vote, commit) VALUES (true, $1, $2, $3) ` +
      `ON CONFLICT (id) DO UPDATE SET term = excluded.term, vote = excluded.vote, commit = excluded.commit`,
  },
  // The common persist (no snapshot) in one statement and one round trip:
  // sql/migrations/0003_fast_path.sql. Autocommit: one implicit transaction.
  append: {
    name: 'rale-log-append',
    text: `SELECT ${SCHEMA}.log_append($1::bigint[], $2::bigint[], $3::smallint[], $4::bytea[], $5::text[], $6::bigint, $7::text, $8::bigint)`,
  },
  upsertSnapshot: {
    name: 'rale-snapshot-upsert',
    text:
      `INSERT INTO ${T.snapshot} (id, index, term, config, data) VALUES (true, $1, $2, $3, $4) ` +
      `ON CONFLICT (id) DO UPDATE SET index = excluded.index, term = excluded.term, config = excluded.config, data = excluded.data`,
  },
  // The longest prefix of [lo, hi] whose running payload size fits in $3, at
  // least its first entry. The window reads only octet_length(data), which
  // does not detoast; the range is bounded by compaction.
  entries: {
    name: 'rale-log-entries',
    text: `
      WITH sized AS (
        SELECT index, sum(octet_length(data)) OVER (ORDER BY index) AS running
        FROM ${T.log} WHERE index BETWEEN $1 AND $2
      )
      SELECT index, term, kind, data, leader FROM ${T.log}
      WHERE index BETWEEN $1 AND (SELECT coalesce(max(index) FILTER (WHERE running <= $3), min(index)) FROM sized)
      ORDER BY index`,
  },
};

interface EntryRow {
  index: number;
  term: number;
  kind: number;
  data: Buffer;
  leader: string | null;
}

function toEntry(row: EntryRow): Entry {
  const entry: Entry = { index: row.index, term: row.term, kind: row.kind as EntryKind, data: row.data };
  if (row.leader !== null) entry.leader = row.leader;
  return entry;
}

function toConfig(value: unknown): ClusterConfig {
  const c = value as Partial<ClusterConfig> | null;
  if (!c || !Array.isArray(c.voters) || !Array.isArray(c.learners)) {
    throw new RaleError('STORAGE', `${T.snapshot}.config is not {"voters": [...], "learners": [...]}: ${JSON.stringify(value)}. The table was edited by hand?`);
  }
  return { voters: c.voters.map(String), learners: c.learners.map(String) };
}

/** Turns "relation does not exist" into what to do about it. */
function explain(err: unknown): unknown {
  const code = (err as { code?: string }).code;
  // RL001: rale.log_append refused a batch that would leave a hole (nothing was written).
  if (code === 'RL001') return new RaleError('STORAGE', (err as Error).message);
  if (code === '42P01' || code === '42883' || code === '3F000') {
    return new RaleError(
      'STORAGE',
      `rale's storage tables are missing in this database (${(err as Error).message}): ` +
        `run the migrations first (migrate() in sidecar/src/pg/migrate.ts; the sidecar does it on start).`,
    );
  }
  return err;
}

export class PgLogStorage implements LogStorage {
  private readonly pool: pg.Pool;
  private readonly bootstrap: ClusterConfig;
  /** Tail of the chain that serialises writes; never rejects. */
  private writes: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(options: PgLogStorageOptions) {
    const config: pg.PoolConfig = typeof options.connection === 'string' ? { connectionString: options.connection } : { ...options.connection };
    this.pool = new pg.Pool({
      application_name: 'rale-log',
      ...config,
      // Durability of persist depends on it: a server, database or role
      // default of `off` would acknowledge commits that a crash can lose.
      // Appended last, so it wins over a caller's own `-c` options.
      options: [config.options, '-c synchronous_commit=on'].filter(Boolean).join(' '),
      max: options.maxConnections ?? 4,
      types: pgTypes,
    });
    const onIdleError = options.onIdleError ?? (() => {});
    // Without a listener, an idle connection's error (server restart) would crash the process.
    this.pool.on('error', onIdleError);
    this.bootstrap = copyConfig(options.bootstrap ?? EMPTY_CONFIG);
  }

  private checkOpen(): void {
    if (this.closed) throw new RaleError('STORAGE', 'This PgLogStorage is closed; create a new one to reopen the database.');
  }

  /** Runs `work` in one transaction on one connection; rolls back if it throws. */
  private async transaction<R>(work: (client: pg.PoolClient) => Promise<R>, begin = 'BEGIN'): Promise<R> {
    const client = await this.pool.connect().catch((err: unknown) => Promise.reject(explain(err)));
    let broken = false;
    // A checked-out client has no 'error' listener (the pool removes its
    // own): if the server dies mid-transaction, the client emits 'error' and,
    // unheard, that would crash the process. The failing query rejects
    // anyway; this only marks the connection as unusable.
    const onError = () => (broken = true);
    client.on('error', onError);
    try {
      await client.query(begin);
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      // A failed ROLLBACK means the connection is unusable: do not return it to the pool.
      await client.query('ROLLBACK').catch(() => (broken = true));
      throw explain(err);
    } finally {
      client.removeListener('error', onError);
      client.release(broken);
    }
  }

  /** Queues a write after every earlier one; a failed write does not block later ones. */
  private write<R>(work: () => Promise<R>): Promise<R> {
    this.checkOpen();
    const result = this.writes.then(work);
    this.writes = result.catch(() => undefined);
    return result;
  }

  async load(): Promise<Omit<StorageState, 'applied'>> {
    this.checkOpen();
    // One consistent view of the three tables.
    return this.transaction(async (c) => {
      const hard = await c.query<{ term: number; vote: string | null; commit: number }>(`SELECT term, vote, commit FROM ${T.hardState}`);
      const snap = await c.query<{ index: number; term: number; config: unknown }>(`SELECT index, term, config FROM ${T.snapshot}`);
      const span = await c.query<{ first: number | null; last: number | null; count: number }>(
        `SELECT min(index) AS first, max(index) AS last, count(*) AS count FROM ${T.log}`,
      );
      // First entry of each run of equal terms (terms never decrease, so one run per term).
      const starts = await c.query<{ index: number; term: number }>(`
        SELECT index, term FROM (
          SELECT index, term, lag(term) OVER (ORDER BY index) AS previous FROM ${T.log}
        ) runs
        WHERE previous IS DISTINCT FROM term
        ORDER BY index`);
      const configs = await c.query<EntryRow>(
        `SELECT index, term, kind, data, leader FROM ${T.log} WHERE kind = ${EntryKind.Config} ORDER BY index`,
      );

      const hardRow = hard.rows[0];
      const snapRow = snap.rows[0];
      const snapshot: SnapshotMeta = snapRow
        ? { index: snapRow.index, term: snapRow.term, config: toConfig(snapRow.config) }
        : { index: 0, term: 0, config: copyConfig(this.bootstrap) };
      const { first, last, count } = span.rows[0] ?? { first: null, last: null, count: 0 };
      // The no-hole invariant, checked on every start: cheap next to the scans above.
      if (first !== null && last !== null && (first !== snapshot.index + 1 || count !== last - first + 1)) {
        throw new RaleError(
          'STORAGE',
          `${T.log} is corrupt: it holds ${count} entries between indexes ${first} and ${last}, but must hold exactly ` +
            `the indexes ${snapshot.index + 1}..${last} (the snapshot is at ${snapshot.index}). Was it edited by hand? ` +
            `Restore this node from a backup or rebuild it from the cluster.`,
        );
      }
      return {
        hardState: hardRow ? { term: hardRow.term, vote: hardRow.vote, commit: hardRow.commit } : { ...INITIAL_HARD_STATE },
        snapshot,
        lastIndex: last ?? snapshot.index,
        termStarts: termStartsOf(starts.rows),
        configEntries: configs.rows.map(toEntry),
      };
    }, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  }

  async persist(batch: PersistBatch): Promise<void> {
    // Validate before queueing: a malformed batch fails without touching the database.
    checkEntries(batch.entries);
    if (batch.snapshot === null) {
      // The hot path: one statement (rale.log_append), one round trip, its
      // own implicit transaction, committed synchronously.
      const h = batch.hardState;
      const e = batch.entries;
      await this.write(() =>
        this.pool
          .query({
            ...SQL.append,
            values: [e.map((x) => x.index), e.map((x) => x.term), e.map((x) => x.kind), e.map((x) => x.data), e.map((x) => x.leader ?? null), h?.term ?? null, h?.vote ?? null, h?.commit ?? null],
          })
          .catch((err: unknown) => Promise.reject(explain(err))),
      );
      return;
    }
    await this.write(() =>
      this.transaction(async (c) => {
        if (batch.snapshot) {
          // Installing a snapshot replaces the whole log.
          await c.query(`DELETE FROM ${T.log}`);
          await upsertSnapshot(c, batch.snapshot);
        }
        if (batch.entries.length > 0) {
          const { rows } = await c.query<{ snapshot_index: number | null; last_index: number | null }>(SQL.bounds);
          const snapshotIndex = rows[0]?.snapshot_index ?? 0;
          const lastIndex = rows[0]?.last_index ?? snapshotIndex;
          const fresh = entriesToWrite(batch.entries, snapshotIndex, lastIndex);
          const first = fresh[0];
          if (first) {
            // Truncate on conflict: the first new entry replaces its index and
            // everything after it. A plain append (the common case) has nothing to drop.
            if (first.index <= lastIndex) await c.query({ ...SQL.truncate, values: [first.index, lastIndex] });
            await c.query({
              ...SQL.insertEntries,
              values: [
                fresh.map((e) => e.index),
                fresh.map((e) => e.term),
                fresh.map((e) => e.kind),
                fresh.map((e) => e.data),
                fresh.map((e) => e.leader ?? null),
              ],
            });
          }
        }
        if (batch.hardState) {
          const h: HardState = batch.hardState;
          await c.query({ ...SQL.upsertHardState, values: [h.term, h.vote, h.commit] });
        }
      }),
    );
  }

  async entries(lo: number, hi: number, maxBytes: number): Promise<Entry[]> {
    this.checkOpen();
    if (lo > hi) return [];
    const limit = Number.isFinite(maxBytes) ? Math.max(0, Math.floor(maxBytes)) : Number.MAX_SAFE_INTEGER;
    const { rows } = await this.pool.query<EntryRow>({ ...SQL.entries, values: [lo, hi, limit] }).catch((err: unknown) => Promise.reject(explain(err)));
    return rows.map(toEntry);
  }

  async saveSnapshot(snapshot: Snapshot): Promise<void> {
    await this.write(() =>
      this.transaction(async (c) => {
        const { rows } = await c.query<{ index: number }>(`SELECT index FROM ${T.snapshot} FOR UPDATE`);
        // An older snapshot than the stored one is ignored: it would leave a
        // hole between it and the log (same rule as MemoryLogStorage).
        if ((rows[0]?.index ?? 0) > snapshot.meta.index) return;
        await upsertSnapshot(c, snapshot);
        // Compaction: only entries the snapshot covers.
        await c.query(`DELETE FROM ${T.log} WHERE index <= $1`, [snapshot.meta.index]);
      }),
    );
  }

  async latestSnapshot(): Promise<Snapshot | null> {
    this.checkOpen();
    const { rows } = await this.pool
      .query<{ index: number; term: number; config: unknown; data: Buffer }>(`SELECT index, term, config, data FROM ${T.snapshot}`)
      .catch((err: unknown) => Promise.reject(explain(err)));
    const row = rows[0];
    return row ? { meta: { index: row.index, term: row.term, config: toConfig(row.config) }, data: row.data } : null;
  }

  async clusterId(): Promise<string | null> {
    this.checkOpen();
    const { rows } = await this.pool.query<{ cluster_id: string }>(`SELECT cluster_id FROM ${T.clusterIdentity}`).catch((err: unknown) => Promise.reject(explain(err)));
    return rows[0]?.cluster_id ?? null;
  }

  /** Stores the cluster id (one row, replaced), committed synchronously like every write here. */
  async saveClusterId(id: string): Promise<void> {
    await this.write(() =>
      this.pool
        .query(
          `INSERT INTO ${T.clusterIdentity} (id, cluster_id) VALUES (true, $1) ` +
            `ON CONFLICT (id) DO UPDATE SET cluster_id = excluded.cluster_id, recorded_at = clock_timestamp()`,
          [id],
        )
        .catch((err: unknown) => Promise.reject(explain(err))),
    );
  }

  /** Waits for queued writes, then closes the pool. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.writes;
    await this.pool.end();
  }
}

async function upsertSnapshot(c: pg.PoolClient, s: Snapshot): Promise<void> {
  const config: ClusterConfig = { voters: [...s.meta.config.voters], learners: [...s.meta.config.learners] };
  await c.query({ ...SQL.upsertSnapshot, values: [s.meta.index, s.meta.term, JSON.stringify(config), s.data] });
}

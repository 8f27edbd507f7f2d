/**
 * The API backend of a rale node on PostgreSQL: Raft operations go to the
 * node's RaftNode (which forwards proposals and membership changes from a
 * follower to the leader over the peer transport), reads go to the node's
 * own database through its pool.
 *
 *   const api = createApi(pgNodeBackend(node), { token });
 */
import type pg from 'pg';
import { RaleError } from '../errors.ts';
import type { PgNode } from '../pg/node.ts';
import type { ApiBackend, LogEntryView } from './api.ts';
import { HttpError, badField } from './errors.ts';
import type { ProposableCommand } from './validate.ts';
import { span, tracing } from '../node/trace.ts';

/** SQLSTATEs that rale.check_command raises for a command it refuses. */
const INVALID_PARAMETER_VALUE = '22023';
const PROGRAM_LIMIT_EXCEEDED = '54000';
const UNDEFINED_FUNCTION = '42883';

export function pgNodeBackend(node: PgNode): ApiBackend {
  const raft = node.raft;
  const pool = node.pool;

  /** A database failure as the API reports it: the node cannot serve, the cluster may. */
  const storage = (err: unknown): RaleError => new RaleError('STORAGE', `PostgreSQL of node ${node.id}: ${(err as Error).message}`);

  async function query<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await pool.query<R>(text, values);
    } catch (err) {
      throw storage(err);
    }
  }

  return {
    id: node.id,
    status: () => raft.status(),
    clusterId: () => raft.clusterId,
    addressOf: (id) => raft.addressOf(id),
    waitForLeader: (timeoutMs) => raft.waitForLeader(timeoutMs),

    /**
     * The same check SQL clients' rale.propose runs, in the database, so the
     * REST API and SQL refuse exactly the same commands: the replicated
     * max_command_bytes setting and the registry of handlers live there.
     */
    async checkCommand(command: ProposableCommand) {
      const from = tracing ? performance.now() : 0;
      try {
        await pool.query('SELECT rale.check_command($1::jsonb)', [JSON.stringify(command)]);
        if (tracing) span('api.checkCommand', performance.now() - from);
      } catch (err) {
        const e = err as { code?: string; message: string; hint?: string };
        const message = e.message.replace(/^rale: /, '');
        if (e.code === PROGRAM_LIMIT_EXCEEDED) throw HttpError.of('ENTRY_TOO_LARGE', message, { field: 'value' }, e.hint);
        if (e.code === UNDEFINED_FUNCTION) throw new HttpError(400, 'INVALID_ARGUMENT', message, { field: 'value.handler' }, e.hint);
        if (e.code === INVALID_PARAMETER_VALUE) {
          const err400 = badField('value', message);
          throw e.hint === undefined ? err400 : new HttpError(400, err400.code, message, err400.details, e.hint);
        }
        throw storage(err);
      }
    },

    propose: (command, id, timeoutMs) => raft.command(command, { id, timeoutMs }),
    changeMembership: (change, timeoutMs) => raft.changeMembership(change, timeoutMs),
    readIndex: (timeoutMs) => raft.readIndex(timeoutMs),
    readBarrier: (timeoutMs) => raft.readBarrier(timeoutMs),
    transferLeadership: (target) => raft.transferLeadership(target),

    async readKey(key) {
      const { rows } = await query<{ applied: number; value: unknown; version: number | null }>(
        `SELECT (SELECT index FROM rale.applied) AS applied, k.value, k.version
         FROM (SELECT 1) AS one LEFT JOIN rale.kv k ON k.key = $1`,
        [key],
      );
      const row = rows[0];
      if (row === undefined) throw storage(new Error('rale.applied has no row'));
      // version is NOT NULL in rale.kv: a null one means no row (a stored JSON null is a value).
      return { applied: row.applied, entry: row.version === null ? null : { value: row.value, version: row.version } };
    },

    async logEntries(from, limit) {
      const { rows } = await query<LogEntryView>('SELECT index, term, kind, leader, payload FROM rale.log($1, $2)', [from, limit]);
      return rows;
    },

    async pingDatabase(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        await Promise.race([pool.query('SELECT 1'), timeout]);
      } finally {
        clearTimeout(timer);
      }
    },

    on: (event, listener) => raft.on(event, listener),
    off: (event, listener) => raft.off(event, listener),
  };
}

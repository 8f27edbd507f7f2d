/**
 * The proposal pump: moves proposals that SQL clients queued in
 * rale.proposals (the transactional outbox) into Raft.
 *
 * - Wake-up without a NOTIFY per proposal: while the pump is busy it loops,
 *   taking batches; only when it finds nothing does it mark itself sleeping
 *   (rale.pump, an unlogged row), look once more (closing the race with a
 *   proposer that checked the flag just before), and wait. Proposers NOTIFY
 *   only while the flag is set. Under load nobody notifies at all.
 * - Exactly once: a proposal's id travels in its entry; the state machine
 *   records it in rale.results with the effects. The pump may therefore
 *   resubmit freely: after a crash (rows still 'pending'), after a leader
 *   change that dropped an entry, or when no result appeared in time.
 * - A proposal made on a follower's database is forwarded to the leader by
 *   the RaftNode.
 * - Waking waiters without polling: a batch is taken `FOR UPDATE` in a
 *   transaction that stays open until the batch's entries are applied on
 *   this node; rale.wait() blocks on those row locks, so it wakes the moment
 *   the outcome is there. Several batches are in flight at once (each on its
 *   own connection), so holding a batch never stops the next one.
 * - Waking waiters of rows not taken yet: while the pump runs it holds
 *   the pick gate (an advisory lock, see gateKick()); rale.wait blocks on it
 *   instead of polling, and is let through each time the pump takes rows.
 */
import pg from 'pg';
import pgListen from 'pg-listen';
import { RaleError, isRaleError } from '../errors.ts';
import type { ConfigChange } from '../core/types.ts';
import type { RaftNode } from '../node/raft-node.ts';
import { encodeCommand } from '../node/command.ts';
import { span, tracing } from '../node/trace.ts';

// pg-listen is CommonJS with `exports.default = fn`: under NodeNext the
// default import is the exports object, and the function is its `.default`.
const createSubscriber = pgListen.default;

export interface PumpOptions {
  pool: pg.Pool;
  connectionString: string;
  /** application_name of the LISTEN connection (pg_stat_activity). */
  applicationName?: string;
  node: RaftNode;
  /** Most proposals taken per round trip. Default 512. */
  batchSize?: number;
  /** Resubmit a submitted proposal with no result after this long. Default 3,000 ms. */
  resubmitAfterMs?: number;
  /** Longest sleep without a wake-up (also paces resubmission while idle). Default 1,000 ms. */
  idleWaitMs?: number;
  /** Batches handed to Raft and not yet applied here, at most. Default 8. */
  maxInflightBatches?: number;
  onError?: (err: Error) => void;
}

/** The second look after the pump sets its sleeping flag (see run()). */
const RECHECK_MS = 3;

/** The pick gate's advisory lock (see gateKick()). */
const GATE_LOCK = '1918987365, 3'; // 0x72616c65 = "rale"
/** How long the pump waits for the gate (waiters hold it shared for an instant, but a loaded machine takes a while to run 64 of them); on timeout it stays open. */
const GATE_LOCK_TIMEOUT_MS = 1000;

interface Submitted {
  done: Array<{ id: string; index: number; term: number }>;
  rejected: Array<{ id: string; error: string }>;
  /** Highest log index used: the batch is released once it is applied here. */
  highest: number;
}

function positiveInt(n: number, name: string): number {
  if (!Number.isSafeInteger(n) || n <= 0) throw new RaleError('INVALID_ARGUMENT', `pump option ${name} must be a positive integer, got ${n}`);
  return n;
}

interface ProposalRow {
  id: string;
  command: unknown;
  kind: 'command' | 'membership';
}

export class ProposalPump {
  private readonly options: Required<Omit<PumpOptions, 'onError'>> & Pick<PumpOptions, 'onError'>;
  private subscriber: ReturnType<typeof createSubscriber> | null = null;
  private running = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  /** A wake-up arrived while the loop was not sleeping (it may have been mid-look): the next sleep returns at once. */
  private poked = false;
  private lastCleanup = 0;
  private readonly inflight = new Set<Promise<void>>();
  /** The gate's connection (kept while the pump runs), whether it holds the gate, and its queue of operations. */
  private gateClient: pg.PoolClient | null = null;
  private gateHeld = false;
  private gateWanted = false;
  private gateCycleWanted = false;
  private gateBusy = false;
  private gateChain: Promise<void> = Promise.resolve();
  /** Proposals moved into Raft since start (for metrics). */
  submitted = 0;

  constructor(options: PumpOptions) {
    this.options = { batchSize: 512, resubmitAfterMs: 3000, idleWaitMs: 1000, maxInflightBatches: 8, applicationName: 'rale listen', ...options };
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const subscriber = createSubscriber({ connectionString: this.options.connectionString, application_name: this.options.applicationName }, { parse: (raw: string) => raw, retryTimeout: 0 });
    subscriber.events.on('error', (err: Error) => {
      if (this.running) this.options.onError?.(err);
    });
    // pg-listen retries a lost connection forever and does not stop when
    // closed meanwhile; a listener that throws here ends its retry loop
    // (pg-listen reports that as an 'error'), so a stopped pump whose
    // database is gone lets the process exit.
    subscriber.events.on('reconnect', () => {
      if (!this.running) throw new Error('the proposal pump has stopped: no more reconnects');
    });
    // After a reconnect, notifications sent meanwhile are lost: look at the table again.
    subscriber.events.on('connected', () => this.poke());
    subscriber.notifications.on('rale_proposals', () => this.poke());
    await subscriber.connect();
    await subscriber.listenTo('rale_proposals');
    this.subscriber = subscriber;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.poke();
    await this.loop;
    this.gateOpen();
    await this.gateChain;
    this.gateClient?.release();
    this.gateClient = null;
    await this.subscriber?.close().catch(() => {});
    this.subscriber = null;
  }

  /**
   * Wakes the loop if it sleeps; otherwise the loop's next sleep returns at
   * once. (A notification that lands while a look is under way may concern
   * a row that look's snapshot did not see: losing it stalled a waiter for
   * the whole idle timeout.)
   */
  poke(): void {
    const wake = this.wake;
    this.wake = null;
    if (wake) wake();
    else this.poked = true;
  }

  private async run(): Promise<void> {
    const { pool } = this.options;
    while (this.running) {
      try {
        if (this.inflight.size >= this.options.maxInflightBatches) {
          this.gateHold();
          await Promise.race(this.inflight);
          continue;
        }
        if (await this.takeAndSubmit()) {
          this.gateCycle();
          await this.maybeCleanup();
          continue;
        }
        // Idle: say so, look once more (a proposer may have read the flag just
        // before it was set, and not notified), then wait for a wake-up.
        await pool.query('UPDATE rale.pump SET sleeping = true');
        let found = await this.takeAndSubmit();
        if (!found) {
          // Proposers read the flag at their commit (a deferred trigger): one
          // that read it just before it was set may commit just after the look
          // above. One more look shortly after covers that instant.
          await this.sleep(RECHECK_MS);
          if (this.running) found = await this.takeAndSubmit();
        }
        if (!found) {
          await this.sleep(this.options.idleWaitMs);
          // Woken (or timed out): take what came first, clear the flag after.
          // Until it is cleared proposers still notify, which only pokes us.
          if (this.running) found = await this.takeAndSubmit();
        }
        if (found) this.gateCycle();
        await pool.query('UPDATE rale.pump SET sleeping = false');
        await this.maybeCleanup();
      } catch (err) {
        this.gateOpen();
        if (!this.running) break;
        this.options.onError?.(err as Error);
        await this.sleep(isRaleError(err) ? 50 : 500); // no leader yet, or the database is away
      }
    }
    await Promise.allSettled(this.inflight);
  }

  /**
   * Takes one batch in a transaction, hands it to Raft, and leaves the
   * transaction open (its row locks are what rale.wait blocks on) until the
   * batch is applied here. Returns false when there was nothing to take.
   */
  private async takeAndSubmit(): Promise<boolean> {
    const connectFrom = tracing ? performance.now() : 0;
    const client = await this.options.pool.connect();
    if (tracing) span('pump.connect', performance.now() - connectFrom);
    let submitted: Submitted;
    try {
      const takeFrom = tracing ? performance.now() : 0;
      const rows = await this.takeBatch(client);
      if (tracing) span(rows.length > 0 ? 'pump.take' : 'pump.takeEmpty', performance.now() - takeFrom, rows.length);
      if (rows.length === 0) {
        await client.query('COMMIT');
        client.release();
        return false;
      }
      submitted = await this.submit(rows);
    } catch (err) {
      // Entries may already be in Raft: the rows stay pending and are
      // resubmitted, which the results table makes harmless.
      await client.query('ROLLBACK').catch(() => {});
      client.release();
      throw err;
    }
    // The holder owns the transaction and the connection from here on: it
    // records the submission and keeps the row locks until the batch is
    // applied here, while this loop goes on taking the next batch.
    const held = this.holdUntilApplied(client, submitted);
    this.inflight.add(held);
    void held.finally(() => this.inflight.delete(held));
    return true;
  }

  private holdUntilApplied(client: pg.PoolClient, submitted: Submitted): Promise<void> {
    return (async () => {
      try {
        const from = tracing ? performance.now() : 0;
        await this.record(client, submitted);
        const recorded = tracing ? performance.now() : 0;
        if (submitted.highest > 0) await this.options.node.waitApplied(submitted.highest, this.options.resubmitAfterMs).catch(() => {});
        const applied = tracing ? performance.now() : 0;
        await client.query('COMMIT');
        if (tracing) {
          span('pump.record', recorded - from, submitted.done.length);
          span('pump.waitApplied', applied - recorded, submitted.done.length);
          span('pump.commit', performance.now() - applied, submitted.done.length);
        }
      } catch (err) {
        this.options.onError?.(err as Error);
        await client.query('ROLLBACK').catch(() => {});
      } finally {
        client.release();
      }
    })();
  }

  /** The gate is wanted held (see gateKick()): the pump runs and takes rows again soon. */
  private gateHold(): void {
    this.gateWanted = true;
    this.gateKick();
  }

  /** Rows were just taken (and are locked by their batch): let the waiters look again, then hold the gate again. */
  private gateCycle(): void {
    this.gateWanted = true;
    this.gateCycleWanted = true;
    this.gateKick();
  }

  /** The pump cannot take rows (an error), or stops: waiters must poll. */
  private gateOpen(): void {
    this.gateWanted = false;
    this.gateCycleWanted = false;
    this.gateKick();
  }

  /**
   * The pick gate: while the pump runs it holds a session advisory lock
   * ("rale", 3) on one connection of its pool; a waiter whose row is neither
   * applied nor locked by a batch waits for it (shared) instead of polling.
   * After every take that found rows (their batch now holds them FOR
   * UPDATE), the pump releases and retakes it in one statement: the waiters
   * queued on it are granted it at the release, let it go at once and look
   * again (those whose rows were taken now block on their row), and a waiter
   * that comes after queues behind the pump's new request, until the next
   * take. It stays held while the pump sleeps until a NOTIFY (the take that
   * follows cycles it); a waiter that looked at its row just before a take
   * and queued just after its cycle would wait for the next take, so
   * rale.wait waits on the gate 25 ms at most, then looks again. While the
   * pump fails (no leader, database away) the gate is open and waiters poll
   * as before. The gate is only a hint: a waiter waits on it at most until
   * its own timeout, and a gate operation
   * that fails (the pump's 1 s lock_timeout, a lost connection) leaves it
   * open. Operations run one at a time, off the loop, coalesced.
   */
  private gateKick(): void {
    if (this.gateBusy) return;
    const needed = () => (this.gateWanted ? !this.gateHeld || this.gateCycleWanted : this.gateHeld);
    if (!needed()) return;
    this.gateBusy = true;
    this.gateChain = (async () => {
      try {
        while (needed() && (this.running || !this.gateWanted)) {
          try {
            if (this.gateClient === null) {
              const client = await this.options.pool.connect();
              try {
                await client.query(`SET lock_timeout = '${GATE_LOCK_TIMEOUT_MS}ms'`);
              } catch (err) {
                client.release(err as Error);
                throw err;
              }
              this.gateClient = client;
            }
            const client = this.gateClient;
            if (!this.gateWanted) {
              this.gateHeld = false;
              await client.query(`SELECT pg_advisory_unlock(${GATE_LOCK})`);
            } else if (this.gateHeld) {
              // A cycle. Evaluated left to right: the release happens even if the new lock times out.
              this.gateCycleWanted = false;
              this.gateHeld = false;
              await client.query(`SELECT pg_advisory_unlock(${GATE_LOCK}), pg_advisory_lock(${GATE_LOCK})`);
              this.gateHeld = true;
            } else {
              this.gateCycleWanted = false;
              await client.query(`SELECT pg_advisory_lock(${GATE_LOCK})`);
              this.gateHeld = true;
            }
          } catch (err) {
            if ((err as { code?: string }).code === '55P03') {
              // lock_timeout: the gate stays open until the next take asks again.
              this.gateWanted = false;
              continue;
            }
            // Anything else: drop the connection (its session, and any lock it held, end with it).
            this.gateClient?.release(err as Error);
            this.gateClient = null;
            this.gateHeld = false;
            this.gateWanted = false;
            if (this.running) this.options.onError?.(err as Error);
          }
        }
      } finally {
        this.gateBusy = false;
      }
    })();
  }

  private sleep(ms: number): Promise<void> {
    if (this.poked) {
      this.poked = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /**
   * Opens the batch's transaction and takes the batch, in one round trip.
   * The transaction commits asynchronously: it only records that rows were
   * handed to Raft (a lost commit makes them pending again, and resubmitting
   * is harmless), and its commit is on the path that wakes rale.wait.
   */
  private async takeBatch(client: pg.PoolClient): Promise<ProposalRow[]> {
    // SKIP LOCKED: rows of batches still in flight are locked by their holders.
    // One simple-protocol query (three statements, one round trip): the two
    // numbers are validated integers, inlined as literals.
    // Every wake-up so far concerns rows committed before this look: it sees them.
    this.poked = false;
    const limit = positiveInt(this.options.batchSize, 'batchSize');
    const resubmitMs = positiveInt(this.options.resubmitAfterMs, 'resubmitAfterMs');
    // Locks: rows are picked FOR SHARE SKIP LOCKED, which skips rows other
    // batches hold (FOR UPDATE) but not a row a rale.wait is probing (it
    // takes FOR SHARE for an instant: skipping it would hide the proposal
    // until the pump's idle timeout); the picked rows are then locked FOR
    // UPDATE (waiting out such a probe), which waiters block on until the
    // batch is applied here. Only this loop picks rows, one look at a time,
    // so two picks never share a row.
    const results = (await client.query(
      `BEGIN; SET LOCAL synchronous_commit = off;
       WITH picked AS (
         SELECT id FROM rale.proposals p
         WHERE state = 'pending'
            OR (state = 'submitted' AND submitted_at < clock_timestamp() - make_interval(secs => ${resubmitMs} / 1000.0)
                AND NOT EXISTS (SELECT 1 FROM rale.results r WHERE r.proposal_id = p.id::text))
         ORDER BY created_at LIMIT ${limit}
         FOR SHARE SKIP LOCKED)
       SELECT p.id, p.command, p.kind FROM rale.proposals p JOIN picked USING (id)
       ORDER BY p.created_at
       FOR UPDATE OF p`,
    )) as unknown as Array<pg.QueryResult<ProposalRow>>;
    return results[2]?.rows ?? [];
  }

  /** Hands rows to Raft. Returns what to record in the batch's transaction. */
  private async submit(rows: ProposalRow[]): Promise<Submitted> {
    const { node } = this.options;
    const commands = rows.filter((r) => r.kind === 'command');
    const done: Array<{ id: string; index: number; term: number }> = [];
    const rejected: Array<{ id: string; error: string }> = [];
    if (commands.length > 0) {
      const positions = await node.submit(commands.map((r) => encodeCommand({ id: r.id, command: r.command })));
      commands.forEach((r, k) => done.push({ id: r.id, index: positions[k]?.index ?? 0, term: positions[k]?.term ?? 0 }));
    }
    for (const r of rows.filter((row) => row.kind === 'membership')) {
      try {
        const position = await node.submitConfigChange({ ...(r.command as ConfigChange), id: r.id });
        done.push({ id: r.id, ...position });
      } catch (err) {
        if (isRaleError(err, 'INVALID_CONFIG_CHANGE') || isRaleError(err, 'INVALID_ARGUMENT')) rejected.push({ id: r.id, error: (err as RaleError).message });
        else if (!isRaleError(err, 'CONFIG_CHANGE_PENDING')) throw err;
        // CONFIG_CHANGE_PENDING: stays pending, tried again next round.
      }
    }
    this.submitted += done.length;
    return { done, rejected, highest: Math.max(0, ...done.map((d) => d.index)) };
  }

  /** Records in the batch's transaction which rows went into Raft (at which position) and which Raft refused. */
  private async record(client: pg.PoolClient, { done, rejected }: Submitted): Promise<void> {
    if (done.length > 0) {
      await client.query(
        `UPDATE rale.proposals p SET state = 'submitted', submitted_at = clock_timestamp(), attempts = attempts + 1, index = u.index, term = u.term
         FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS u(id, index, term) WHERE p.id = u.id`,
        [done.map((d) => d.id), done.map((d) => d.index), done.map((d) => d.term)],
      );
    }
    if (rejected.length > 0) {
      await client.query(
        `UPDATE rale.proposals p SET state = 'rejected', error = u.error FROM unnest($1::uuid[], $2::text[]) AS u(id, error) WHERE p.id = u.id`,
        [rejected.map((d) => d.id), rejected.map((d) => d.error)],
      );
    }
  }

  /** Drops outbox rows whose result is recorded (at most once a second). */
  private async maybeCleanup(): Promise<void> {
    const now = Date.now();
    if (now - this.lastCleanup < 1000) return;
    this.lastCleanup = now;
    await this.options.pool.query(
      `DELETE FROM rale.proposals WHERE id IN (
         SELECT p.id FROM rale.proposals p JOIN rale.results r ON r.proposal_id = p.id::text FOR UPDATE OF p SKIP LOCKED)`,
    );
  }
}

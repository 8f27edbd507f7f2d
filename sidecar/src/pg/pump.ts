/**
 * The proposal pump: moves proposals that SQL clients queued in
 * rale.proposals (the transactional outbox) into Raft.
 *
 * - Wake-up without a NOTIFY per proposal: while the pump is busy it loops,
 *   taking batches; when it finds nothing, or took only a proposal or two
 *   (light load), it marks itself sleeping (rale.pump, an unlogged row),
 *   looks once more (closing the race with a proposer that checked the flag
 *   just before), and waits. Proposers NOTIFY only while the flag is set:
 *   under load nobody notifies; at light load about one NOTIFY per batch.
 * - Exactly once: a proposal's id travels in its entry; the state machine
 *   records it in rale.results with the effects. The pump may therefore
 *   resubmit freely: after a crash, after a leader change that dropped an
 *   entry, or when no result appeared in time.
 * - A proposal made on a follower's database is forwarded to the leader by
 *   the RaftNode.
 * - Waking waiters without polling: every batch has a number and a session
 *   advisory lock ("ralb", number), taken on the batch's connection in the
 *   same statement that marks the rows `submitted` with that number, before
 *   that statement commits; it is released once the batch is applied on
 *   this node. rale.wait() blocks on it (shared), so it wakes the moment the
 *   outcome is there. Several batches are in flight at once (each holding
 *   its connection), so holding a batch never stops the next one.
 *   (Migration 0005_batch_wait.sql: the lock replaced row locks, whose
 *   probes cost a transaction id and a WAL record each.)
 * - Waking waiters of rows not taken yet: while the pump runs it holds
 *   the pick gate (an advisory lock, see gateKick()); rale.wait blocks on it
 *   instead of polling, and is let through each time the pump takes rows.
 * - Everything the pump writes is recoverable (a lost take makes rows
 *   pending again; resubmitting is harmless), so its connections commit
 *   asynchronously: no fsync on the pump's path.
 */
import { randomInt } from 'node:crypto';
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

/** A batch of at most this many rows sends the pump down its idle path (see run()). */
const SMALL_BATCH = 2;

/** The second look after the pump sets its sleeping flag (see run()). */
const RECHECK_MS = 3;

/** A holder lets its batch go this long before the batch's rows become stale (see holdUntilApplied()). */
const STALE_MARGIN_MS = 250;

/** How long a batch of only membership changes that must wait keeps them before they are taken again. */
const AGAIN_PAUSE_MS = 20;

/** The class (first key) of the batches' advisory locks ("ralb"): the second key is the batch number. */
export const BATCH_LOCK_CLASS = 1918987362; // 0x72616c62
/** Batch numbers are 1..MAX_BATCH_NUMBER (a positive int4, the lock's second key and rale.proposals.batch). */
const MAX_BATCH_NUMBER = 2 ** 31 - 1;

/** The pick gate's advisory lock (see gateKick()). */
const GATE_LOCK = '1918987365, 3'; // 0x72616c65 = "rale"
/** How long the pump waits for the gate (waiters hold it shared for an instant, but a loaded machine takes a while to run 64 of them); on timeout it stays open. */
const GATE_LOCK_TIMEOUT_MS = 1000;

interface Submitted {
  done: Array<{ id: string; index: number; term: number }>;
  rejected: Array<{ id: string; error: string }>;
  /** Membership changes that wait for the one before them: put back (pending) just before this batch is let go. */
  again: string[];
  /** Highest log index used: the batch is released once it is applied here. */
  highest: number;
}

function positiveInt(n: number, name: string): number {
  if (!Number.isSafeInteger(n) || n <= 0) throw new RaleError('INVALID_ARGUMENT', `pump option ${name} must be a positive integer, got ${n}`);
  return n;
}

/** Set the pump's sleeping flag (committed) before a look, or clear it after one. */
type SleepingFlag = 'set' | 'clear';

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
  /** When the pump last looked for stale submitted rows (see takeBatch()). */
  private lastStaleLook = 0;
  /** No look has succeeded since start (see takeBatch()). */
  private firstLook = true;
  private readonly inflight = new Set<Promise<void>>();
  /** The gate's connection (kept while the pump runs), whether it holds the gate, and its queue of operations. */
  private gateClient: pg.PoolClient | null = null;
  private gateHeld = false;
  private gateWanted = false;
  private gateCycleWanted = false;
  private gateBusy = false;
  private gateChain: Promise<void> = Promise.resolve();
  /** The next batch's number (see BATCH_LOCK_CLASS); random at start, so that a restart rarely reuses a live number. */
  private nextBatch = randomInt(1, MAX_BATCH_NUMBER);
  /** Proposals moved into Raft since start (for metrics). */
  submitted = 0;
  /** Takes (looks at the outbox, empty or not) since start: what the pump costs its database. */
  looks = 0;

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
    // Round trips are what a proposal pays for on a small machine (every one
    // wakes a process), so the loop has three paces:
    // - busy (the last take found more than SMALL_BATCH rows): the sleeping
    //   flag is clear, nobody notifies, the loop takes again at once;
    // - going quiet (a busy take found few or none): set the flag and look in
    //   one round trip, then look once more shortly after (a proposer may
    //   have read the flag just before it was set, and not notified);
    // - light (the flag is set and stays set): every proposer notifies at its
    //   commit, so the loop sleeps until poked and takes one batch per wake-up,
    //   with no empty look and no flag write. A large take clears the flag in
    //   its own round trip and goes back to busy.
    // At one client a proposal costs the pump one take (it cost three: take
    // and clear the flag, set the flag and look, look again).
    let taken = 0;
    // Whether rale.pump.sleeping is set (as this loop last wrote it); unknown
    // after an error, so the next round sets it again.
    let flagSet = false;
    while (this.running) {
      try {
        if (this.inflight.size >= this.options.maxInflightBatches) {
          this.gateHold();
          await Promise.race(this.inflight);
          continue;
        }
        if (flagSet) {
          // Light: sleep until a proposer's NOTIFY (or the idle timeout, which
          // paces the look for stale rows); a NOTIFY that came during the last
          // take makes this return at once. After a large take, look at once
          // (it may have stopped at batchSize with rows left, whose NOTIFYs
          // came before it).
          if (taken <= SMALL_BATCH) await this.sleep(this.options.idleWaitMs);
          if (!this.running) break;
          const clear = taken > SMALL_BATCH;
          taken = await this.takeAndSubmit(clear ? 'clear' : undefined);
          if (clear) flagSet = false;
          if (taken > 0) this.gateCycle();
          await this.maybeCleanup();
          continue;
        }
        if (taken > SMALL_BATCH) {
          // Busy: look again at once.
          taken = await this.takeAndSubmit();
          if (taken > 0) this.gateCycle();
          if (taken > SMALL_BATCH) {
            await this.maybeCleanup();
            continue;
          }
        }
        // Going quiet: set the flag and look once more in one round trip.
        const found = await this.takeAndSubmit('set');
        flagSet = true;
        // Proposers read the flag at their commit (a deferred trigger): one
        // that read it just before it was set may commit just after the look
        // above. One more look shortly after covers that instant.
        await this.sleep(RECHECK_MS);
        const late = this.running ? await this.takeAndSubmit() : 0;
        if (found > 0 || late > 0) this.gateCycle();
        taken = found + late;
        await this.maybeCleanup();
      } catch (err) {
        this.gateOpen();
        taken = 0;
        flagSet = false;
        if (!this.running) break;
        this.options.onError?.(err as Error);
        await this.sleep(isRaleError(err) ? 50 : 500); // no leader yet, or the database is away
      }
    }
    await Promise.allSettled(this.inflight);
  }

  /**
   * Takes one batch (rows marked `submitted` under a new batch number, its
   * lock held by this connection), hands it to Raft, and leaves the lock
   * held until the batch is applied here. `flag` sets or clears the
   * sleeping flag in the same round trip (see takeBatch()). Returns how many
   * rows it took.
   */
  private async takeAndSubmit(flag?: SleepingFlag): Promise<number> {
    const connectFrom = tracing ? performance.now() : 0;
    const client = await this.options.pool.connect();
    if (tracing) span('pump.connect', performance.now() - connectFrom);
    const batch = this.nextBatch;
    this.nextBatch = batch >= MAX_BATCH_NUMBER ? 1 : batch + 1;
    const takenAt = Date.now();
    let rows: ProposalRow[];
    try {
      const takeFrom = tracing ? performance.now() : 0;
      rows = await this.takeBatch(client, batch, flag);
      if (tracing) span(rows.length > 0 ? 'pump.take' : 'pump.takeEmpty', performance.now() - takeFrom, rows.length);
    } catch (err) {
      // Whether the take committed is unknown: drop the session, and the batch's lock with it.
      client.release(err as Error);
      throw err;
    }
    if (rows.length === 0) {
      client.release(); // no rows, no lock taken
      return 0;
    }
    let submitted: Submitted;
    try {
      submitted = await this.submit(rows);
    } catch (err) {
      // Not all of the batch reached Raft: put it back for the next round.
      // Entries that did reach Raft are made harmless by the results table.
      await this.putBack(client, batch, rows.map((r) => r.id))
        .then(() => this.letGo(client, batch))
        .catch((failure: unknown) => client.release(failure as Error));
      throw err;
    }
    // The holder owns the connection (and the batch's lock) from here on: it
    // records the submission and lets the batch go once it is applied here,
    // while this loop goes on taking the next batch.
    const held = this.holdUntilApplied(client, batch, takenAt, submitted);
    this.inflight.add(held);
    void held.finally(() => this.inflight.delete(held));
    return rows.length;
  }

  private holdUntilApplied(client: pg.PoolClient, batch: number, takenAt: number, submitted: Submitted): Promise<void> {
    return (async () => {
      try {
        const from = tracing ? performance.now() : 0;
        await this.recordRejected(client, batch, submitted.rejected);
        const recorded = tracing ? performance.now() : 0;
        // Waits at most until shortly before the rows become stale (resubmitAfterMs
        // after the take): a stale look must not take rows whose batch is still held.
        const waitMs = Math.max(0, takenAt + this.options.resubmitAfterMs - STALE_MARGIN_MS - Date.now());
        if (submitted.highest > 0) await this.options.node.waitApplied(submitted.highest, waitMs).catch(() => {});
        const applied = tracing ? performance.now() : 0;
        if (submitted.again.length > 0) {
          // Membership changes that wait for the one before them: taken again
          // once this batch is applied, or after a pause (not in a tight loop).
          if (submitted.highest === 0) await new Promise((resolve) => setTimeout(resolve, AGAIN_PAUSE_MS));
          await this.putBack(client, batch, submitted.again);
        }
        await this.letGo(client, batch, submitted.done);
        if (tracing) {
          span('pump.recordRejected', recorded - from, submitted.rejected.length);
          span('pump.waitApplied', applied - recorded, submitted.done.length);
          span('pump.release', performance.now() - applied, submitted.done.length);
        }
      } catch (err) {
        this.options.onError?.(err as Error);
        client.release(err as Error); // the session ends, and the batch's lock with it
      }
    })();
  }

  /**
   * Releases the batch's lock (its waiters wake: their results are committed
   * by now), records where the batch's proposals went in the log for those
   * without a result yet (rale.outcome_of's 'committed'), in one round trip, and returns the connection
   * to the pool. On failure it throws and leaves the connection to the
   * caller, which drops it (client.release(err)): the lock ends with the
   * session. (Exactly one release per connection: pg-pool throws on a second.)
   */
  private async letGo(client: pg.PoolClient, batch: number, done: Submitted['done'] = []): Promise<void> {
    await client.query('SELECT rale.pump_let_go($1, $2::uuid[], $3::bigint[], $4::bigint[])', [batch, done.map((d) => d.id), done.map((d) => d.index), done.map((d) => d.term)]);
    client.release();
  }

  /** Rows of a batch that did not (all) reach Raft become pending again. */
  private async putBack(client: pg.PoolClient, batch: number, ids: string[]): Promise<void> {
    await client.query(`UPDATE rale.proposals SET state = 'pending', batch = NULL WHERE id = ANY($1::uuid[]) AND batch = $2 AND state = 'submitted'`, [ids, batch]);
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
   * ("rale", 3) on one connection of its pool; a waiter whose row is not in
   * a batch it can wait for (pending, or let go without a result) waits for
   * it (shared) instead of polling. After every take that found rows (their
   * batch's lock is held by then), the pump releases and retakes it in one
   * statement: the waiters queued on it are granted it at the release, let
   * it go at once and look again (those whose rows were taken now wait on
   * their batch's lock), and a waiter
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
   * Takes a batch in one round trip and one transaction: marks up to
   * batchSize rows `submitted` under the number `batch`, takes the batch's
   * session lock when there is at least one row (before the commit that
   * makes the number visible to waiters), and commits. The transaction
   * commits asynchronously (the pump pool's setting): it only records that
   * rows were handed to Raft; a lost commit makes them pending again, and
   * resubmitting is harmless.
   */
  private async takeBatch(client: pg.PoolClient, batch: number, flag?: SleepingFlag): Promise<ProposalRow[]> {
    // Every wake-up so far concerns rows committed before this look: it sees them.
    this.poked = false;
    const limit = positiveInt(this.options.batchSize, 'batchSize');
    const resubmitMs = positiveInt(this.options.resubmitAfterMs, 'resubmitAfterMs');
    if (!Number.isInteger(batch) || batch < 1 || batch > MAX_BATCH_NUMBER) throw new RaleError('INVALID_ARGUMENT', `pump batch number must be 1..${MAX_BATCH_NUMBER}, got ${batch}`);
    // rale.pump_take (0005_batch_wait.sql): the statement lives in plpgsql,
    // which keeps its plan (sent as text it was planned on every look). The
    // three numbers are validated integers, inlined: the call may share a
    // simple-protocol round trip with the flag's statements.
    // Submitted rows with no result after resubmitAfterMs are looked for at
    // most every resubmitAfterMs / 4 (the look scans the outbox; pending
    // rows alone are found through their index).
    // The first look after start takes every submitted row with no result
    // at once: they were handed to Raft by a previous run of the pump (a
    // crash, a restart), and nothing in this run waits for them.
    const now = Date.now();
    const lookForStale = now - this.lastStaleLook >= resubmitMs / 4;
    if (lookForStale) this.lastStaleLook = now;
    const staleAfterMs = this.firstLook ? 1 : lookForStale ? resubmitMs : 'NULL';
    const take = `SELECT id, command, kind FROM rale.pump_take(${batch}, ${limit}, ${staleAfterMs})`;
    // The flag in the same round trip (simple protocol, several statements):
    // set, it is committed before the look starts (its own transaction), so
    // a proposer that commits after the look reads it set and notifies;
    // cleared, after the look, in the look's transaction.
    let rows: ProposalRow[];
    if (flag === undefined) rows = (await client.query<ProposalRow>(take)).rows;
    else {
      const text = flag === 'set' ? `BEGIN; UPDATE rale.pump SET sleeping = true; COMMIT; ${take}` : `${take}; UPDATE rale.pump SET sleeping = false`;
      const results = (await client.query(text)) as unknown as Array<pg.QueryResult<ProposalRow>>;
      rows = results[flag === 'set' ? 3 : 0]?.rows ?? [];
    }
    this.firstLook = false;
    this.looks++;
    return rows;
  }

  /** Hands rows to Raft. Returns what the batch's holder records and lets go. */
  private async submit(rows: ProposalRow[]): Promise<Submitted> {
    const { node } = this.options;
    const commands = rows.filter((r) => r.kind === 'command');
    const done: Array<{ id: string; index: number; term: number }> = [];
    const rejected: Array<{ id: string; error: string }> = [];
    const again: string[] = [];
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
        else if (isRaleError(err, 'CONFIG_CHANGE_PENDING')) again.push(r.id);
        else throw err;
      }
    }
    this.submitted += done.length;
    return { done, rejected, again, highest: Math.max(0, ...done.map((d) => d.index)) };
  }

  /** Records the rows Raft refused (before the batch is let go, so that their waiters find the error). */
  private async recordRejected(client: pg.PoolClient, batch: number, rejected: Submitted['rejected']): Promise<void> {
    if (rejected.length === 0) return;
    await client.query(
      `UPDATE rale.proposals p SET state = 'rejected', error = u.error FROM unnest($1::uuid[], $2::text[]) AS u(id, error) WHERE p.id = u.id AND p.batch = $3`,
      [rejected.map((d) => d.id), rejected.map((d) => d.error), batch],
    );
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

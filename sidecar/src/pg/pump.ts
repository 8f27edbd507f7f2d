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
 */
import pg from 'pg';
import pgListen from 'pg-listen';
import { RaleError, isRaleError } from '../errors.ts';
import type { ConfigChange } from '../core/types.ts';
import type { RaftNode } from '../node/raft-node.ts';
import { encodeCommand } from '../node/command.ts';

// pg-listen is CommonJS with `exports.default = fn`: under NodeNext the
// default import is the exports object, and the function is its `.default`.
const createSubscriber = pgListen.default;

export interface PumpOptions {
  pool: pg.Pool;
  connectionString: string;
  node: RaftNode;
  /** Most proposals taken per round trip. Default 512. */
  batchSize?: number;
  /** Resubmit a submitted proposal with no result after this long. Default 3,000 ms. */
  resubmitAfterMs?: number;
  /** Longest sleep without a wake-up (also paces resubmission while idle). Default 1,000 ms. */
  idleWaitMs?: number;
  onError?: (err: Error) => void;
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
  private lastCleanup = 0;
  /** Proposals moved into Raft since start (for metrics). */
  submitted = 0;

  constructor(options: PumpOptions) {
    this.options = { batchSize: 512, resubmitAfterMs: 3000, idleWaitMs: 1000, ...options };
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const subscriber = createSubscriber({ connectionString: this.options.connectionString }, { parse: (raw: string) => raw, retryTimeout: 0 });
    subscriber.events.on('error', (err: Error) => this.options.onError?.(err));
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
    await this.subscriber?.close().catch(() => {});
    this.subscriber = null;
  }

  /** Wakes the loop if it sleeps. */
  poke(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private async run(): Promise<void> {
    const { pool } = this.options;
    while (this.running) {
      try {
        let rows = await this.takeBatch();
        if (rows.length === 0) {
          await pool.query('UPDATE rale.pump SET sleeping = true');
          rows = await this.takeBatch();
          if (rows.length === 0) await this.sleep(this.options.idleWaitMs);
          await pool.query('UPDATE rale.pump SET sleeping = false');
        }
        if (rows.length > 0) await this.submit(rows);
        await this.maybeCleanup();
      } catch (err) {
        if (!this.running) break;
        this.options.onError?.(err as Error);
        await this.sleep(isRaleError(err) ? 50 : 500); // no leader yet, or the database is away
      }
    }
  }

  private sleep(ms: number): Promise<void> {
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

  private async takeBatch(): Promise<ProposalRow[]> {
    const { rows } = await this.options.pool.query<ProposalRow>(
      `SELECT id, command, kind FROM rale.proposals p
       WHERE state = 'pending'
          OR (state = 'submitted' AND submitted_at < clock_timestamp() - make_interval(secs => $2 / 1000.0)
              AND NOT EXISTS (SELECT 1 FROM rale.results r WHERE r.proposal_id = p.id::text))
       ORDER BY created_at LIMIT $1`,
      [this.options.batchSize, this.options.resubmitAfterMs],
    );
    return rows;
  }

  private async submit(rows: ProposalRow[]): Promise<void> {
    const { node, pool } = this.options;
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
    if (done.length > 0) {
      await pool.query(
        `UPDATE rale.proposals p SET state = 'submitted', submitted_at = clock_timestamp(), attempts = attempts + 1, index = u.index, term = u.term
         FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS u(id, index, term) WHERE p.id = u.id`,
        [done.map((d) => d.id), done.map((d) => d.index), done.map((d) => d.term)],
      );
      this.submitted += done.length;
    }
    if (rejected.length > 0) {
      await pool.query(
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
    await this.options.pool.query(`DELETE FROM rale.proposals p USING rale.results r WHERE r.proposal_id = p.id::text`);
  }
}

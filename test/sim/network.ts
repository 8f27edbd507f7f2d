/**
 * The simulated network between nodes. A message sent at time t is delivered
 * at t + latency (so messages overtake each other: reordering), unless it is
 * lost, or a partition separates sender and receiver at send or at delivery
 * time. It may also be duplicated (each copy with its own latency) or held up
 * for a long extra delay.
 *
 * Links are FIFO by default (a message never overtakes an earlier one on the
 * same link, as over TCP); with `reorder` each message gets its own latency,
 * so later messages may arrive first.
 *
 * Partitions are directed: `blocked` holds "from>to" pairs, so one-way
 * partitions (A hears B but B does not hear A) are as easy as symmetric ones.
 */
import type { Message, NodeId } from '../../sidecar/src/core/index.ts';
import type { Rng } from './rng.ts';
import type { Scheduler } from './scheduler.ts';

export interface NetworkFaults {
  /** Probability that a message is lost. */
  loss: number;
  /** Probability that a message is delivered twice. */
  duplicate: number;
  /** Probability that a message is held up by an extra delay of up to `maxExtraDelay`. */
  delay: number;
  maxExtraDelay: number;
}

export const NO_NETWORK_FAULTS: NetworkFaults = { loss: 0, duplicate: 0, delay: 0, maxExtraDelay: 0 };

/** Why a message did not arrive. */
export type DropReason = 'loss' | 'partition' | 'down';

/** Hands a delivered message to its receiver (which may be down: it then returns false). */
export type Deliver = (message: Message) => boolean;

/** Told once per send (not per duplicate) when the fate of the message is known. */
export type Outcome = (delivered: boolean, reason: DropReason | null) => void;

export interface NetworkStats {
  sent: number;
  delivered: number;
  lost: number;
  partitioned: number;
  duplicated: number;
  toDownNode: number;
  byType: Record<string, number>;
}

export class Network {
  faults: NetworkFaults = { ...NO_NETWORK_FAULTS };
  /** Whether messages on one link may overtake each other. */
  reorder = false;
  minLatency = 5;
  maxLatency = 40;
  readonly stats: NetworkStats = { sent: 0, delivered: 0, lost: 0, partitioned: 0, duplicated: 0, toDownNode: 0, byType: {} };
  /** Targeted tests drop chosen messages: a message for which any filter returns true is lost. */
  readonly dropFilters: Array<(message: Message) => boolean> = [];
  /** Observers of every delivered message (targeted tests count rejections, snapshots...). */
  readonly observers: Array<(message: Message) => void> = [];
  private readonly blocked = new Set<string>();
  /** Per link "from>to": the delivery time of the latest message scheduled on it (FIFO links). */
  private readonly linkTail = new Map<string, number>();

  constructor(
    private readonly scheduler: Scheduler,
    private readonly rng: Rng,
    private readonly deliver: Deliver,
  ) {}

  // ------------------------------------------------------------ partitions

  canSend(from: NodeId, to: NodeId): boolean {
    return !this.blocked.has(`${from}>${to}`);
  }

  block(from: NodeId, to: NodeId): void {
    this.blocked.add(`${from}>${to}`);
  }

  unblock(from: NodeId, to: NodeId): void {
    this.blocked.delete(`${from}>${to}`);
  }

  /** Cuts every link between the two groups, both ways. */
  split(groupA: readonly NodeId[], groupB: readonly NodeId[]): void {
    for (const a of groupA) {
      for (const b of groupB) {
        this.block(a, b);
        this.block(b, a);
      }
    }
  }

  /** Cuts `node` off from everyone in `all`, both ways. */
  isolate(node: NodeId, all: readonly NodeId[]): void {
    this.split([node], all.filter((id) => id !== node));
  }

  heal(): void {
    this.blocked.clear();
  }

  get partitioned(): boolean {
    return this.blocked.size > 0;
  }

  describePartitions(): string {
    return [...this.blocked].sort().join(',');
  }

  // ------------------------------------------------------------ delivery

  send(message: Message, outcome?: Outcome): void {
    this.stats.sent++;
    this.stats.byType[message.type] = (this.stats.byType[message.type] ?? 0) + 1;
    if (!this.canSend(message.from, message.to)) {
      this.stats.partitioned++;
      outcome?.(false, 'partition');
      return;
    }
    if (this.rng.chance(this.faults.loss) || this.dropFilters.some((drop) => drop(message))) {
      this.stats.lost++;
      outcome?.(false, 'loss');
      return;
    }
    this.schedule(message, outcome);
    if (this.rng.chance(this.faults.duplicate)) {
      this.stats.duplicated++;
      this.schedule(message, undefined, true);
    }
  }

  private schedule(message: Message, outcome: Outcome | undefined, duplicate = false): void {
    let latency = this.rng.int(this.minLatency, this.maxLatency + 1);
    if (this.rng.chance(this.faults.delay)) latency += this.rng.int(0, this.faults.maxExtraDelay + 1);
    if (!this.reorder) {
      // FIFO link: never deliver before the previous message on this link (a delay holds up the whole link).
      const link = `${message.from}>${message.to}`;
      const at = Math.max(this.scheduler.now + latency, this.linkTail.get(link) ?? 0);
      this.linkTail.set(link, at);
      latency = at - this.scheduler.now;
    }
    const label = `deliver ${message.type} ${message.from}>${message.to} t${message.term}${duplicate ? ' dup' : ''}`;
    this.scheduler.schedule(latency, message.to, label, () => {
      if (!this.canSend(message.from, message.to)) {
        this.stats.partitioned++;
        outcome?.(false, 'partition');
        return;
      }
      // Each copy is a separate object, as if deserialised: receivers cannot share state through it.
      const delivered = this.deliver({ ...message });
      if (delivered) {
        this.stats.delivered++;
        for (const observe of this.observers) observe(message);
      } else {
        this.stats.toDownNode++;
      }
      outcome?.(delivered, delivered ? null : 'down');
    });
  }
}

/**
 * Virtual time and the event queue. Nothing in the simulator waits on a real
 * clock: every action is an event at a virtual time, and events run one at a
 * time in (time, insertion order). The interleaving of ticks, message
 * deliveries and driver work therefore depends only on the delays the seeded
 * generator chose when the events were scheduled.
 */
import type { NodeId } from '../../sidecar/src/core/index.ts';

/** Virtual time units per core tick. Latencies and delays are in these units. */
export const TICK = 100;

export interface SimEvent {
  time: number;
  seq: number;
  /** The node whose state the event may change (its invariants are checked after it), or null. */
  node: NodeId | null;
  label: string;
  run: () => void;
}

export class Scheduler {
  now = 0;
  private seq = 0;
  private readonly heap: SimEvent[] = [];

  get pending(): number {
    return this.heap.length;
  }

  schedule(delay: number, node: NodeId | null, label: string, run: () => void): void {
    if (!(delay >= 0)) throw new Error(`negative or invalid delay ${delay}`);
    const event: SimEvent = { time: this.now + Math.floor(delay), seq: this.seq++, node, label, run };
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(event, heap[parent] as SimEvent)) break;
      heap[i] = heap[parent] as SimEvent;
      i = parent;
    }
    heap[i] = event;
  }

  /** Removes and returns the earliest event, advancing virtual time to it. */
  next(): SimEvent | undefined {
    const heap = this.heap;
    const top = heap[0];
    if (top === undefined) return undefined;
    const last = heap.pop() as SimEvent;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= heap.length) break;
        const right = left + 1;
        const child = right < heap.length && before(heap[right] as SimEvent, heap[left] as SimEvent) ? right : left;
        if (!before(heap[child] as SimEvent, last)) break;
        heap[i] = heap[child] as SimEvent;
        i = child;
      }
      heap[i] = last;
    }
    this.now = top.time;
    return top;
  }
}

function before(x: SimEvent, y: SimEvent): boolean {
  return x.time < y.time || (x.time === y.time && x.seq < y.seq);
}

/**
 * leaderUnreachable: when the transport reports that the leader's connection
 * broke abruptly (its process died), followers drop the lease and campaign
 * within a few ticks instead of a whole election timeout. A wrong hint (the
 * leader is alive) must not disturb the cluster. Three cores are driven by
 * hand here, messages delivered at once, storage taken as durable at once.
 */
import test from 'ava';
import { RaftCore, Role, seededRandom, type Message, type StorageState } from '../../sidecar/src/core/index.ts';

const VOTERS = ['a', 'b', 'c'];
const ELECTION_TICKS = 10;

function storage(): StorageState {
  return {
    hardState: { term: 1, vote: null, commit: 0 },
    snapshot: { index: 0, term: 0, config: { voters: VOTERS, learners: [] } },
    lastIndex: 0,
    termStarts: [],
    configEntries: [],
    applied: 0,
  };
}

class Cluster {
  readonly cores = new Map<string, RaftCore>();
  readonly dead = new Set<string>();

  constructor(seed: number) {
    for (const [k, id] of VOTERS.entries()) {
      this.cores.set(id, new RaftCore({ id, random: seededRandom(seed * 7 + k), electionTicks: ELECTION_TICKS, heartbeatTicks: 1 }, storage()));
    }
  }

  core(id: string): RaftCore {
    return this.cores.get(id) as RaftCore;
  }

  /** Delivers everything until quiet; a dead node neither sends nor receives. */
  settle(): void {
    for (let round = 0; round < 100; round++) {
      const outbox: Message[] = [];
      for (const [id, core] of this.cores) {
        if (this.dead.has(id)) continue;
        while (core.hasReady()) {
          const ready = core.ready();
          outbox.push(...ready.messages);
          core.advance(ready);
        }
      }
      if (outbox.length === 0) return;
      for (const m of outbox) if (!this.dead.has(m.to)) this.core(m.to).step(m);
    }
  }

  tick(): void {
    for (const [id, core] of this.cores) if (!this.dead.has(id)) core.tick();
    this.settle();
  }

  leader(): string | null {
    for (const [id, core] of this.cores) if (!this.dead.has(id) && core.currentRole === Role.Leader) return id;
    return null;
  }

  /** Ticks until a live leader other than `not` exists; returns how many ticks it took. */
  ticksUntilNewLeader(not: string, limit = 200): number {
    for (let k = 1; k <= limit; k++) {
      this.tick();
      const l = this.leader();
      if (l !== null && l !== not) return k;
    }
    throw new Error('no new leader');
  }
}

function electedCluster(seed: number): { cluster: Cluster; leader: string } {
  const cluster = new Cluster(seed);
  for (let k = 0; k < 100 && cluster.leader() === null; k++) cluster.tick();
  for (let k = 0; k < 5; k++) cluster.tick(); // heartbeats flowing, followers in lease
  const leader = cluster.leader();
  if (leader === null) throw new Error('setup: no leader');
  return { cluster, leader };
}

test('followers told the leader died elect a new one within a few ticks, not an election timeout', (t) => {
  const withHint: number[] = [];
  const without: number[] = [];
  for (let seed = 1; seed <= 20; seed++) {
    for (const hint of [true, false]) {
      const { cluster, leader } = electedCluster(seed);
      cluster.dead.add(leader);
      if (hint) for (const id of VOTERS) if (id !== leader) cluster.core(id).leaderUnreachable(leader);
      (hint ? withHint : without).push(cluster.ticksUntilNewLeader(leader));
    }
  }
  // Lock-step ticks make two followers campaigning in the same tick (a split vote, then an
  // ordinary election) likelier than in real time; most elections are still quick.
  const quick = withHint.filter((ticks) => ticks <= Math.floor(ELECTION_TICKS / 2) + 2).length;
  t.true(quick >= 0.7 * withHint.length, `with the hint: ${withHint.join(',')}`);
  t.true(Math.min(...without) >= ELECTION_TICKS, `without: ${without.join(',')}`);
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] as number;
  t.true(median(withHint) * 2 < median(without), `medians: ${median(withHint)} with, ${median(without)} without`);
});

test('a wrong hint (the leader is alive) does not change the leader or the term', (t) => {
  for (let seed = 1; seed <= 20; seed++) {
    const { cluster, leader } = electedCluster(seed);
    const term = cluster.core(leader).currentTerm;
    const follower = VOTERS.find((id) => id !== leader) as string;
    cluster.core(follower).leaderUnreachable(leader);
    for (let k = 0; k < 3 * ELECTION_TICKS; k++) cluster.tick();
    t.is(cluster.leader(), leader, `seed ${seed}`);
    t.is(cluster.core(leader).currentTerm, term, `seed ${seed}: no election disturbed the term`);
    t.is(cluster.core(follower).currentLeader, leader, `seed ${seed}: the follower trusts the leader again`);
  }
});

test('a hint about a node that is not the leader changes nothing', (t) => {
  const { cluster, leader } = electedCluster(3);
  const [f1, f2] = VOTERS.filter((id) => id !== leader) as [string, string];
  cluster.core(f1).leaderUnreachable(f2);
  t.is(cluster.core(f1).currentLeader, leader);
  cluster.core(leader).leaderUnreachable(f1);
  t.is(cluster.core(leader).currentRole, Role.Leader);
});

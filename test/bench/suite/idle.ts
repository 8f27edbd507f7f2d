/** An idle cluster should keep its leader: count term and leader changes over some minutes. */
import { sleep, type BenchCluster } from './cluster.ts';

export interface IdleResult {
  minutes: number;
  termBefore: number;
  termAfter: number;
  /** Times some node reported a higher term than before. */
  termChanges: number;
  leaderChanges: number;
  /** Polls in which a node did not answer. */
  unanswered: number;
}

export async function idle(cluster: BenchCluster, minutes: number, progress: (line: string) => void): Promise<IdleResult> {
  const leader = await cluster.leader();
  const termBefore = (await cluster.status(leader))?.term ?? 0;
  let term = termBefore;
  let leaderId = leader.id;
  let termChanges = 0;
  let leaderChanges = 0;
  let unanswered = 0;
  const end = Date.now() + minutes * 60_000;
  let nextReport = Date.now() + 60_000;
  while (Date.now() < end) {
    await sleep(Math.min(1_000, Math.max(0, end - Date.now())));
    for (const s of await Promise.all(cluster.nodes.map((n) => cluster.status(n)))) {
      if (s === null) {
        unanswered++;
        continue;
      }
      if (s.term > term) {
        termChanges++;
        term = s.term;
      }
      if (s.leader !== null && s.leader !== leaderId) {
        leaderChanges++;
        leaderId = s.leader;
      }
    }
    if (Date.now() >= nextReport) {
      progress(`idle: ${Math.round((end - Date.now()) / 60_000)} min left, term ${term}, ${termChanges} term change(s)`);
      nextReport += 60_000;
    }
  }
  return { minutes, termBefore, termAfter: term, termChanges, leaderChanges, unanswered };
}

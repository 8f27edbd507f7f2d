/**
 * Majority arithmetic over a set of voters. Kept apart from the core so that
 * it can be tested exhaustively on its own.
 */
import type { NodeId } from './types.ts';

/** Votes needed for a majority of `voterCount` voters. */
export function majority(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

/**
 * The highest index that a majority of voters has matched: sort the voters'
 * match indexes descending and take the one at position majority - 1.
 * With no voters there is no quorum and the answer is 0.
 */
export function committedIndex(voters: readonly NodeId[], matchOf: (id: NodeId) => number): number {
  if (voters.length === 0) return 0;
  const matches = voters.map(matchOf).sort((x, y) => y - x);
  return matches[majority(voters.length) - 1] ?? 0;
}

export type VoteOutcome = 'won' | 'lost' | 'pending';

/** Tallies granted and rejected votes among voters (votes from non-voters do not count). */
export function tallyVotes(voters: readonly NodeId[], votes: ReadonlyMap<NodeId, boolean>): VoteOutcome {
  let granted = 0;
  let rejected = 0;
  for (const id of voters) {
    const vote = votes.get(id);
    if (vote === true) granted++;
    else if (vote === false) rejected++;
  }
  const needed = majority(voters.length);
  if (granted >= needed) return 'won';
  if (voters.length - rejected < needed) return 'lost';
  return 'pending';
}

/** True when the voters in `acks` form a majority of `voters`. */
export function hasQuorum(voters: readonly NodeId[], acks: ReadonlySet<NodeId> | ((id: NodeId) => boolean)): boolean {
  const has = typeof acks === 'function' ? acks : (id: NodeId) => acks.has(id);
  let count = 0;
  for (const id of voters) if (has(id)) count++;
  return voters.length > 0 && count >= majority(voters.length);
}

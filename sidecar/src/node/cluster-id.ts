/**
 * The cluster's identity: a short fingerprint of how the cluster was founded
 * (its founding voters and an optional token), the same on every member.
 *
 * Why: Raft trusts that an entry's index and term identify its content. The
 * founders each write the first entry (index 1, term 1) from their own
 * `cluster.bootstrap` list; founders given different lists would hold
 * different entries under the same index and term, and a node cross-wired to
 * another cluster would vote and append there. So every peer call carries the
 * caller's cluster id, and a node refuses calls that carry another one, with
 * an error that names both (etcd does the same with its cluster ID, derived
 * from --initial-cluster-token and the members).
 *
 * Founders compute it at bootstrap; a node that joins adopts the id of the
 * first peer that calls it; both store it (LogStorage.saveClusterId) and
 * keep it for good. A call that carries no id (a peer of an older version)
 * is accepted.
 */
import { createHash } from 'node:crypto';
import { RaleError } from '../errors.ts';
import type { NodeId } from '../core/types.ts';

/** Longest cluster token (configuration `cluster.token`). */
export const MAX_CLUSTER_TOKEN_LENGTH = 256;

/** A cluster id: 16 lowercase hex digits. */
export const CLUSTER_ID_PATTERN = /^[0-9a-f]{16}$/;

/**
 * The id of a cluster founded with `voters` (in any order) and `token`
 * (default ''): the first 64 bits of a SHA-256, in hex.
 */
export function clusterIdOf(voters: readonly NodeId[], token = ''): string {
  if (voters.length === 0) throw new RaleError('INVALID_ARGUMENT', 'a cluster id needs the founding voters: the list is empty');
  if (token.length > MAX_CLUSTER_TOKEN_LENGTH) throw new RaleError('INVALID_ARGUMENT', `the cluster token is ${token.length} characters long, above ${MAX_CLUSTER_TOKEN_LENGTH}`);
  const hash = createHash('sha256');
  hash.update('rale-cluster\u0000');
  // Lengths first, so that no two different inputs give the same byte string.
  hash.update(`${token.length}:${token}\u0000`);
  for (const id of [...new Set(voters)].sort()) hash.update(`${id.length}:${id}\u0000`);
  return hash.digest('hex').slice(0, 16);
}

/** Whether `value` has the form of a cluster id (what a peer sends is checked before it is compared or stored). */
export function isClusterId(value: unknown): value is string {
  return typeof value === 'string' && CLUSTER_ID_PATTERN.test(value);
}

/**
 * Cluster configurations and the one-server-at-a-time changes between them.
 *
 * Why single-server changes (Raft thesis §4.1) and not joint consensus: any
 * two majorities of configurations that differ by one voter overlap, so a
 * configuration may take effect as soon as its entry is APPENDED, with no
 * intermediate joint phase. Safety needs two extra rules, both enforced by the
 * core: at most one uncommitted change at a time, and a new leader must commit
 * an entry of its own term (its no-op) before proposing a change (the fix for
 * the bug Ongaro reported in 2015). Learners never count toward any majority,
 * so adding and removing them is always safe.
 */
import { RaleError } from '../errors.ts';
import type { ClusterConfig, ConfigChange, NodeId } from './types.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function emptyConfig(): ClusterConfig {
  return { voters: [], learners: [] };
}

export function cloneConfig(config: ClusterConfig): ClusterConfig {
  return { voters: [...config.voters], learners: [...config.learners] };
}

export function isVoter(config: ClusterConfig, id: NodeId): boolean {
  return config.voters.includes(id);
}

export function isMember(config: ClusterConfig, id: NodeId): boolean {
  return config.voters.includes(id) || config.learners.includes(id);
}

export function members(config: ClusterConfig): NodeId[] {
  return [...config.voters, ...config.learners];
}

function invalid(message: string, change: ConfigChange): never {
  throw new RaleError('INVALID_CONFIG_CHANGE', message, { change });
}

/** The configuration after `change`; throws INVALID_CONFIG_CHANGE when it does not apply. */
export function applyConfigChange(config: ClusterConfig, change: ConfigChange): ClusterConfig {
  if (change.type === 'bootstrap') {
    if (config.voters.length > 0 || config.learners.length > 0) invalid('a cluster is bootstrapped only once, on an empty configuration', change);
    const voters = Array.isArray(change.voters) ? [...new Set(change.voters)] : [];
    if (voters.length === 0 || !voters.every((v) => typeof v === 'string' && v.length > 0)) {
      invalid('a bootstrap needs a non-empty list of non-empty voter ids', change);
    }
    return { voters, learners: [] };
  }
  const next = cloneConfig(config);
  const node = change.node;
  if (typeof node !== 'string' || node.length === 0) invalid('a membership change needs a non-empty node id', change);
  switch (change.type) {
    case 'addLearner':
      if (isMember(config, node)) invalid(`node ${node} is already a member`, change);
      next.learners.push(node);
      return next;
    case 'addVoter':
      if (isVoter(config, node)) invalid(`node ${node} is already a voter`, change);
      next.learners = next.learners.filter((id) => id !== node);
      next.voters.push(node);
      return next;
    case 'promote':
      if (!config.learners.includes(node)) invalid(`node ${node} is not a learner; add it as a learner first`, change);
      next.learners = next.learners.filter((id) => id !== node);
      next.voters.push(node);
      return next;
    case 'remove':
      if (!isMember(config, node)) invalid(`node ${node} is not a member`, change);
      if (config.voters.length === 1 && config.voters[0] === node) {
        invalid(`node ${node} is the last voter; a cluster cannot remove its last voter`, change);
      }
      next.voters = next.voters.filter((id) => id !== node);
      next.learners = next.learners.filter((id) => id !== node);
      return next;
    default:
      return invalid(`unknown membership change type ${JSON.stringify((change as { type: unknown }).type)}`, change);
  }
}

export function encodeConfigChange(change: ConfigChange): Uint8Array {
  return encoder.encode(JSON.stringify(change));
}

export function decodeConfigChange(data: Uint8Array): ConfigChange {
  let parsed: ConfigChange;
  try {
    parsed = JSON.parse(decoder.decode(data)) as ConfigChange;
  } catch {
    throw new RaleError('INVALID_ARGUMENT', 'a config entry does not hold JSON');
  }
  const named = parsed !== null && typeof parsed === 'object' && (parsed.type === 'bootstrap' ? Array.isArray(parsed.voters) : typeof parsed.node === 'string');
  if (!named) {
    throw new RaleError('INVALID_ARGUMENT', 'a config entry does not hold a membership change');
  }
  return parsed;
}

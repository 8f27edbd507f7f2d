/**
 * The clusterconsensus bridge (docs/bridges/clusterconsensus.md).
 *
 * - Clients of clusterconsensus POST to `/_clusterc/<clusterId>/submit` on
 *   any rale node's REST server: the changes are proposed into rale and
 *   answered Accepted once applied (see changes.ts for the mapping).
 * - Participants are learners of rale's membership at `clusterc://host:port`;
 *   rale's leader is their master (master.ts). They never vote: promotion is
 *   refused here, and the link answers no vote anyway.
 * - The other operations sent to a rale node are refused in the protocol's
 *   own terms (rale nodes are never participants of a foreign master).
 */
import { isRaleError, RaleError } from '../../sidecar/src/errors.ts';
import { decodeConfigChange } from '../../sidecar/src/core/config.ts';
import { EntryKind, type ConfigChange, type Entry, type NodeId } from '../../sidecar/src/core/types.ts';
import type { Bridge, BridgeContext, BridgeMember, BridgeModule } from '../../sidecar/src/plugins/bridge-api.ts';
import { changeToCommand, PARTICIPANT_SCHEME } from './changes.ts';
import { makeErr, NO_ERR, type ErrorCode, type GenericResponse, type Operation } from './codec.ts';
import { ParticipantLink, type MasterSettings } from './master.ts';
import { createClusterConsensusHandler } from './server.ts';

export interface ClusterConsensusOptions extends MasterSettings {
  maxBodyBytes: number;
}

const DEFAULTS = {
  clusterId: 'rale',
  requestTimeoutMs: 5_000,
  retryMs: 1_000,
  maxHeldEntries: 10_000,
  maxBatchChanges: 256,
  maxBodyBytes: 64 * 1024 * 1024,
};

const KNOWN_OPTIONS = ['clusterId', 'advertiseUrl', 'requestTimeoutMs', 'retryMs', 'maxHeldEntries', 'maxBatchChanges', 'maxBodyBytes'];

function optionError(name: string, problem: string): RaleError {
  return new RaleError('INVALID_ARGUMENT', `bridge clusterconsensus: option ${name} ${problem}`);
}

function positiveInt(raw: Record<string, unknown>, name: keyof typeof DEFAULTS): number {
  const value = raw[name] ?? DEFAULTS[name];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) throw optionError(name, `must be a positive integer, got ${JSON.stringify(value)}`);
  return value;
}

/** Validates the bridge's options; errors name the option and say what to write. */
export function parseOptions(raw: Readonly<Record<string, unknown>>): ClusterConsensusOptions {
  for (const key of Object.keys(raw)) {
    if (!KNOWN_OPTIONS.includes(key)) throw optionError(key, `is unknown; the options are ${KNOWN_OPTIONS.join(', ')}`);
  }
  const clusterId = raw.clusterId ?? DEFAULTS.clusterId;
  if (typeof clusterId !== 'string' || !/^[A-Za-z0-9._~-]+$/.test(clusterId)) {
    throw optionError('clusterId', `must be a non-empty string of letters, digits, '.', '_', '~', '-' (one URL path segment), got ${JSON.stringify(clusterId)}`);
  }
  const advertise = raw.advertiseUrl;
  if (typeof advertise !== 'string') {
    throw optionError('advertiseUrl', 'is required: the http://host:port where clusterconsensus participants reach this node\'s REST server (its /_clusterc endpoints)');
  }
  let parsed: URL;
  try {
    parsed = new URL(advertise);
  } catch {
    throw optionError('advertiseUrl', `must be an http:// or https:// URL, got ${JSON.stringify(advertise)}`);
  }
  if ((parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || parsed.search !== '' || parsed.hash !== '') {
    throw optionError('advertiseUrl', `must be an http:// or https:// URL without query or fragment, got ${JSON.stringify(advertise)}`);
  }
  return {
    clusterId,
    advertiseUrl: advertise.replace(/\/+$/, ''),
    requestTimeoutMs: positiveInt(raw, 'requestTimeoutMs'),
    retryMs: positiveInt(raw, 'retryMs'),
    maxHeldEntries: positiveInt(raw, 'maxHeldEntries'),
    maxBatchChanges: positiveInt(raw, 'maxBatchChanges'),
    maxBodyBytes: positiveInt(raw, 'maxBodyBytes'),
  };
}

/** The clusterconsensus error a failed proposal becomes: retryable where retrying may succeed. */
export function errorCodeFor(err: unknown): ErrorCode {
  if (!isRaleError(err)) return 'ERR_CALL';
  switch (err.code) {
    case 'NOT_LEADER':
    case 'NO_LEADER':
    case 'STOPPED':
    case 'PROPOSAL_DROPPED':
      return 'ERR_STATE';
    case 'TIMEOUT':
      return 'ERR_MAJORITY';
    case 'INVALID_ARGUMENT':
    case 'ENTRY_TOO_LARGE':
      return 'ERR_DENIED';
    default:
      return 'ERR_CALL';
  }
}

const isParticipantAddress = (address: string | null | undefined): boolean => address?.startsWith(`${PARTICIPANT_SCHEME}://`) === true;

/** Refuses membership changes that would let a participant vote. */
export function checkMembershipChange(change: ConfigChange, members: BridgeMember[]): void {
  const why = 'clusterconsensus carries neither votes nor Raft\'s log matching, so a participant can never vote or count toward commit; it stays a learner';
  if (change.type === 'promote') {
    const member = members.find((m) => m.id === change.node);
    if (member !== undefined && isParticipantAddress(member.address)) {
      throw new RaleError('INVALID_ARGUMENT', `${change.node} (${member.address}) is a clusterconsensus participant and cannot be promoted to voter: ${why} (it already follows the log as one)`, { node_id: change.node });
    }
  }
  if (change.type === 'addVoter' && isParticipantAddress(change.context)) {
    throw new RaleError('INVALID_ARGUMENT', `${change.node} (${change.context}) is a clusterconsensus participant and cannot be added as a voter: ${why}; add it as a learner`, { node_id: change.node });
  }
}

export function createClusterConsensusBridge(ctx: BridgeContext): Bridge {
  const options = parseOptions(ctx.options);
  const links = new Map<NodeId, ParticipantLink>();
  /** Highest clusterconsensus instance used per participant (outlives a link: see ParticipantLink). */
  const instances = new Map<NodeId, number>();
  const unsubscribe: Array<() => void> = [];

  const submit = async (changes: Array<Uint8Array | null> | null): Promise<GenericResponse> => {
    // One proposal per change, in order: each is applied before the next is proposed.
    for (const [k, change] of (changes ?? []).entries()) {
      try {
        const outcome = await ctx.propose(changeToCommand(change, options.clusterId), { timeoutMs: options.requestTimeoutMs });
        if (outcome.status === 'failed') {
          return { Accepted: false, Err: makeErr('ERR_DENIED', `change ${k} was committed at index ${outcome.index} but did not apply: ${outcome.error ?? 'failed'}`) };
        }
      } catch (err) {
        const applied = k === 0 ? '' : ` (changes 0-${k - 1} were applied)`;
        return { Accepted: false, Err: makeErr(errorCodeFor(err), `change ${k} was not applied${applied}: ${(err as Error).message}`) };
      }
    }
    return { Accepted: true, Err: { ...NO_ERR } };
  };

  const refuseParticipantOp = (op: Operation): GenericResponse => ({
    Accepted: false,
    Err: makeErr('ERR_DENIED', `${op} refused: ${ctx.nodeId} is a rale node; it follows rale's Raft log, never a clusterconsensus master`),
  });

  const prepare = (instance: number) => {
    // Never a grant: rale's Raft leader is the only master. The reference
    // candidate reads only Accepted and gives up when it is above its number.
    let term = 0;
    try {
      term = ctx.status().term;
    } catch {
      // stopped: deny all the same
    }
    if (instance >= Number.MAX_SAFE_INTEGER) return null;
    return { Accepted: Math.max(instance + 1, term), Err: makeErr('ERR_DENIED', `${ctx.nodeId} is a rale node: rale's Raft leader is the clusterconsensus master, and rale nodes grant no prepare`) };
  };

  ctx.mountHttp('/_clusterc', createClusterConsensusHandler({ clusterId: options.clusterId, maxBodyBytes: options.maxBodyBytes, handlers: { submit, prepare, refuseParticipantOp } }), { auth: false });

  ctx.registerPeerScheme(PARTICIPANT_SCHEME, (peer, address) => {
    const link = new ParticipantLink(ctx, options, peer, address, instances);
    links.get(peer)?.reset();
    links.set(peer, link);
    return link;
  });

  return {
    start() {
      unsubscribe.push(
        ctx.on('role', () => {
          let leading = false;
          try {
            leading = ctx.status().role === 'leader';
          } catch {
            // stopped
          }
          if (!leading) for (const link of links.values()) link.reset();
        }),
        ctx.on('applied', (...args: unknown[]) => {
          // A participant's removal is not sent to it through the log (the leader stops replicating to it at once): tell it here.
          const entry = args[0] as Entry;
          if (entry.kind !== EntryKind.Config) return;
          let change: ConfigChange;
          try {
            change = decodeConfigChange(entry.data);
          } catch {
            return;
          }
          if (change.type !== 'remove') return;
          const link = links.get(change.node);
          if (link === undefined || ctx.status().role !== 'leader') return;
          link.notifyRemoved();
          links.delete(change.node);
        }),
      );
    },
    stop() {
      for (const off of unsubscribe.splice(0)) off();
      for (const link of links.values()) void link.close();
      links.clear();
    },
    health() {
      if (links.size === 0) return { ok: true, detail: `cluster ${options.clusterId}: no participants` };
      const all = [...links.values()];
      return { ok: all.every((l) => l.healthy), detail: `cluster ${options.clusterId}: ${all.map((l) => l.describe()).join('; ')}` };
    },
    checkMembershipChange,
  };
}

export const bridge: BridgeModule = {
  apiVersion: 1,
  name: 'clusterconsensus',
  create: createClusterConsensusBridge,
};

export default bridge;

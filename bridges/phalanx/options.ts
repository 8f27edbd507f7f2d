/**
 * The phalanx bridge's options (the `options` object of its entry in the
 * sidecar configuration), validated with errors that name the option.
 */
import { parseHostPort } from './debug-http.ts';

export interface PhalanxOptions {
  /** Where the Phalanx debug HTTP server (/health, /debug/status) listens; null: not served. */
  debugListen: { host: string; port: number } | null;
  /**
   * What a follower does with KV.Propose and KV.Read: 'forward' (rale's way:
   * the request goes to the leader and succeeds here), or 'redirect'
   * (Phalanx's way: answer `not leader` with the leader's address).
   */
  followers: 'forward' | 'redirect';
  /** How long KV.Propose waits for its entry to be applied before answering `proposal timed out` (Phalanx: 5 s). */
  proposeTimeoutMs: number;
  /** How long KV.Read waits for its read barrier. */
  readTimeoutMs: number;
  /** Deadline of each AppendEntries / RequestVote sent to a Phalanx member (Phalanx uses 2 s). */
  rpcTimeoutMs: number;
  /** Most keys listed in /debug/status `kv_data` (kv_size always counts them all). */
  kvDataLimit: number;
  /** Most core messages queued for one Phalanx member; older ones are dropped (the leader resends). */
  maxQueuedMessages: number;
}

const KNOWN = ['debugListen', 'followers', 'proposeTimeoutMs', 'readTimeoutMs', 'rpcTimeoutMs', 'kvDataLimit', 'maxQueuedMessages'];

export class PhalanxOptionsError extends Error {
  constructor(message: string) {
    super(`bridge phalanx: ${message}`);
    this.name = 'PhalanxOptionsError';
  }
}

function int(raw: Readonly<Record<string, unknown>>, name: string, fallback: number, min: number, max: number): number {
  const value = raw[name];
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new PhalanxOptionsError(`option ${name} must be an integer from ${min} to ${max}, not ${JSON.stringify(value)}`);
  }
  return value;
}

export function parsePhalanxOptions(raw: Readonly<Record<string, unknown>>): PhalanxOptions {
  for (const key of Object.keys(raw)) {
    if (!KNOWN.includes(key)) throw new PhalanxOptionsError(`unknown option ${JSON.stringify(key)}; the options are ${KNOWN.join(', ')}`);
  }
  let debugListen: PhalanxOptions['debugListen'] = null;
  if (raw.debugListen !== undefined && raw.debugListen !== null) {
    try {
      debugListen = parseHostPort(raw.debugListen, 'option debugListen');
    } catch (err) {
      throw new PhalanxOptionsError((err as Error).message);
    }
  }
  const followers = raw.followers ?? 'forward';
  if (followers !== 'forward' && followers !== 'redirect') {
    throw new PhalanxOptionsError(`option followers must be "forward" (a follower passes KV calls to the leader) or "redirect" (it answers "not leader" as Phalanx does), not ${JSON.stringify(raw.followers)}`);
  }
  return {
    debugListen,
    followers,
    proposeTimeoutMs: int(raw, 'proposeTimeoutMs', 5000, 1, 600_000),
    readTimeoutMs: int(raw, 'readTimeoutMs', 2000, 1, 600_000),
    rpcTimeoutMs: int(raw, 'rpcTimeoutMs', 2000, 1, 600_000),
    kvDataLimit: int(raw, 'kvDataLimit', 1000, 0, 100_000),
    maxQueuedMessages: int(raw, 'maxQueuedMessages', 256, 1, 100_000),
  };
}

/**
 * Shape checks for Raft messages arriving from the network.
 *
 * The core trusts its inputs: a term that is a string, or an entry whose
 * data is not bytes, would corrupt its state rather than make it throw. The
 * transport is where untrusted bytes become Messages, so it checks every
 * field the core reads before a message reaches `step`. Unknown extra fields
 * are left alone (a newer peer may send more).
 */
import { EntryKind, MessageType, type Message } from '../core/types.ts';
import { RaleError } from '../errors.ts';
import { isPlainObject } from './wire.ts';

const MESSAGE_TYPES = new Set<string>(Object.values(MessageType));
const ENTRY_KINDS = new Set<unknown>([EntryKind.Normal, EntryKind.Noop, EntryKind.Config]);

class Check {
  constructor(private readonly path: string) {}

  fail(what: string): never {
    throw new RaleError('INVALID_ARGUMENT', `${this.path}: ${what}`);
  }

  object(value: unknown): Record<string, unknown> {
    if (!isPlainObject(value)) this.fail('expected a map');
    return value;
  }
}

function count(obj: Record<string, unknown>, key: string, path: string): void {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) new Check(`${path}.${key}`).fail('expected an integer >= 0');
}

function bool(obj: Record<string, unknown>, key: string, path: string): void {
  if (typeof obj[key] !== 'boolean') new Check(`${path}.${key}`).fail('expected a boolean');
}

function str(obj: Record<string, unknown>, key: string, path: string): void {
  if (typeof obj[key] !== 'string') new Check(`${path}.${key}`).fail('expected a string');
}

function strings(value: unknown, path: string): void {
  if (!Array.isArray(value) || !value.every((s) => typeof s === 'string')) new Check(path).fail('expected an array of strings');
}

function bytes(obj: Record<string, unknown>, key: string, path: string): void {
  if (!(obj[key] instanceof Uint8Array)) new Check(`${path}.${key}`).fail('expected bytes');
}

function checkEntry(value: unknown, path: string): void {
  const e = new Check(path).object(value);
  count(e, 'index', path);
  count(e, 'term', path);
  if (!ENTRY_KINDS.has(e.kind)) new Check(`${path}.kind`).fail('expected an entry kind (0, 1 or 2)');
  bytes(e, 'data', path);
  // A sender that wrote an absent leader as nil: the type says absent.
  if (e.leader === null) delete e.leader;
  if (e.leader !== undefined) str(e, 'leader', path);
}

function checkMessage(value: unknown, path: string): Message {
  const m = new Check(path).object(value);
  if (typeof m.type !== 'string' || !MESSAGE_TYPES.has(m.type)) new Check(`${path}.type`).fail('expected a message type');
  str(m, 'from', path);
  str(m, 'to', path);
  count(m, 'term', path);
  switch (m.type as MessageType) {
    case MessageType.Append:
      count(m, 'prevIndex', path);
      count(m, 'prevTerm', path);
      count(m, 'commit', path);
      if (!Array.isArray(m.entries)) new Check(`${path}.entries`).fail('expected an array');
      (m.entries as unknown[]).forEach((e, i) => checkEntry(e, `${path}.entries[${i}]`));
      // What every leader sends and the core assumes: entries follow prevIndex one by one,
      // with terms that never decrease, from prevTerm up to the message's term.
      (m.entries as Array<{ index: number; term: number }>).forEach((e, i, all) => {
        const at = `${path}.entries[${i}]`;
        if (e.index !== (m.prevIndex as number) + 1 + i) new Check(`${at}.index`).fail(`expected ${(m.prevIndex as number) + 1 + i} (entries follow prevIndex without gaps)`);
        const floor = i === 0 ? (m.prevTerm as number) : (all[i - 1] as { term: number }).term;
        if (e.term < floor || e.term > (m.term as number)) new Check(`${at}.term`).fail(`expected a term between ${floor} and the message's term ${String(m.term)}`);
      });
      break;
    case MessageType.AppendResponse:
      bool(m, 'reject', path);
      count(m, 'index', path);
      count(m, 'hintIndex', path);
      count(m, 'hintTerm', path);
      break;
    case MessageType.Heartbeat:
      count(m, 'commit', path);
      str(m, 'context', path);
      break;
    case MessageType.HeartbeatResponse:
    case MessageType.ReadIndex:
      str(m, 'context', path);
      break;
    case MessageType.Vote:
      bool(m, 'preVote', path);
      count(m, 'lastIndex', path);
      count(m, 'lastTerm', path);
      bool(m, 'transfer', path);
      break;
    case MessageType.VoteResponse:
      bool(m, 'preVote', path);
      bool(m, 'granted', path);
      break;
    case MessageType.Snapshot: {
      const snapshot = new Check(`${path}.snapshot`).object(m.snapshot);
      const meta = new Check(`${path}.snapshot.meta`).object(snapshot.meta);
      count(meta, 'index', `${path}.snapshot.meta`);
      count(meta, 'term', `${path}.snapshot.meta`);
      const config = new Check(`${path}.snapshot.meta.config`).object(meta.config);
      strings(config.voters, `${path}.snapshot.meta.config.voters`);
      strings(config.learners, `${path}.snapshot.meta.config.learners`);
      bytes(snapshot, 'data', `${path}.snapshot`);
      break;
    }
    case MessageType.TimeoutNow:
      break;
    case MessageType.ReadIndexResponse:
      str(m, 'context', path);
      count(m, 'index', path);
      break;
  }
  return m as unknown as Message;
}

/** The arguments of a 'raft' call as Messages, or a RaleError INVALID_ARGUMENT naming the first bad field. */
export function checkRaftBatch(args: unknown): Message[] {
  if (!Array.isArray(args)) throw new RaleError('INVALID_ARGUMENT', "a 'raft' call carries an array of messages");
  return args.map((m, i) => checkMessage(m, `messages[${i}]`));
}


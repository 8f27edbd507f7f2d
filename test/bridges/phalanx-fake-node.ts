/**
 * A small stand-in for a Phalanx node, written for the tests with the codec:
 * a gRPC server over node:http2 that, like grpc-go with Phalanx's `json`
 * codec, accepts only `content-type: application/grpc+json` (anything else
 * gets the error a protobuf codec would give), and a follower's side of
 * Phalanx's Raft: the log check and truncation of handleAppendEntries,
 * commit = min(LeaderCommit, last new index), SET/DELETE applied to a map.
 * It can also send RequestVote / AppendEntries to a rale node (as a Phalanx
 * node bidding to lead would).
 */
import http2 from 'node:http2';
import {
  decodeAppendEntriesRequest,
  decodeCommand,
  decodeRequestVoteRequest,
  encodeAppendEntriesResponse,
  encodeRequestVoteResponse,
  EntryType,
  type AppendEntriesRequest,
  type LogEntry,
} from '../../bridges/phalanx/codec.ts';
import { frame, unframe } from '../../bridges/phalanx/grpc-json-client.ts';

export class FakePhalanxNode {
  term = 0;
  votedFor = '';
  leader = '';
  /** Index 0 is Phalanx's sentinel. */
  log: LogEntry[] = [{ Index: 0, Term: 0, Data: null, Type: EntryType.Command }];
  commitIndex = 0;
  applied = 0;
  kv = new Map<string, string>();
  received: AppendEntriesRequest[] = [];
  contentTypes: string[] = [];
  applyErrors: string[] = [];
  port = 0;
  private server: http2.Http2Server | null = null;

  /**
   * How the follower bounds its commit index: 'last-new' is the Raft paper's
   * min(LeaderCommit, index of the last new entry); 'last-index' is the rule
   * many Go implementations write, min(LeaderCommit, last log index), which
   * counts a stale suffix beyond what the request matched.
   */
  constructor(
    readonly id: string,
    readonly commitRule: 'last-new' | 'last-index' = 'last-new',
  ) {}

  lastIndex(): number {
    return (this.log.at(-1) as LogEntry).Index;
  }

  private termAt(index: number): number {
    return index < this.log.length ? (this.log[index] as LogEntry).Term : 0;
  }

  /** Phalanx's handleAppendEntries, follower side. */
  appendEntries(req: AppendEntriesRequest): { Term: number; Success: boolean; LastLogIndex: number } {
    if (req.Term > this.term) {
      this.term = req.Term;
      this.votedFor = '';
    }
    if (req.Term < this.term) return { Term: this.term, Success: false, LastLogIndex: 0 };
    this.leader = req.LeaderID;
    if (req.PrevLogIndex > 0) {
      if (req.PrevLogIndex > this.lastIndex()) return { Term: this.term, Success: false, LastLogIndex: this.lastIndex() };
      if (this.termAt(req.PrevLogIndex) !== req.PrevLogTerm) {
        const conflict = this.termAt(req.PrevLogIndex);
        let hint = req.PrevLogIndex;
        while (hint > 1 && this.termAt(hint - 1) === conflict) hint--;
        return { Term: this.term, Success: false, LastLogIndex: hint - 1 };
      }
    }
    const entries = req.Entries ?? [];
    for (let i = 0; i < entries.length; i++) {
      const idx = req.PrevLogIndex + i + 1;
      if (idx <= this.lastIndex()) {
        if (this.termAt(idx) !== (entries[i] as LogEntry).Term) {
          this.log = [...this.log.slice(0, idx), ...entries.slice(i)];
          break;
        }
      } else {
        this.log = [...this.log, ...entries.slice(i)];
        break;
      }
    }
    if (req.LeaderCommit > this.commitIndex) this.commitIndex = Math.min(req.LeaderCommit, this.commitRule === 'last-new' ? req.PrevLogIndex + entries.length : this.lastIndex());
    this.apply();
    return { Term: this.term, Success: true, LastLogIndex: this.lastIndex() };
  }

  private apply(): void {
    const end = Math.min(this.commitIndex, this.lastIndex());
    for (; this.applied < end; ) {
      this.applied++;
      const entry = this.log[this.applied] as LogEntry;
      if (entry.Type !== EntryType.Command || entry.Data === null || entry.Data.length === 0) continue;
      try {
        const cmd = decodeCommand(entry.Data);
        if (cmd.op === 'SET') this.kv.set(cmd.key, cmd.value);
        else if (cmd.op === 'DELETE') this.kv.delete(cmd.key);
        else this.applyErrors.push(`fsm: unknown op ${JSON.stringify(cmd.op)}`);
      } catch (err) {
        this.applyErrors.push((err as Error).message);
      }
    }
  }

  /** Loses the log, as a restarted Phalanx node does (term and vote survive). */
  restart(): void {
    this.log = this.log.slice(0, 1);
    this.commitIndex = 0;
    this.applied = 0;
    this.kv.clear();
  }

  async listen(): Promise<number> {
    const server = http2.createServer();
    server.on('stream', (stream, headers) => {
      const contentType = String(headers['content-type'] ?? '');
      this.contentTypes.push(contentType);
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const reply = (status: number, message: string, body?: string) => {
          if (stream.destroyed) return;
          stream.respond({ ':status': 200, 'content-type': 'application/grpc+json' }, { waitForTrailers: true });
          stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': String(status), ...(message === '' ? {} : { 'grpc-message': encodeURIComponent(message) }) }));
          stream.end(body === undefined ? undefined : frame(new TextEncoder().encode(body)));
        };
        if (contentType !== 'application/grpc+json') {
          reply(13, 'grpc: error unmarshalling request: proto: cannot parse invalid wire-format data');
          return;
        }
        const body = unframe(Buffer.concat(chunks));
        if ('error' in body) {
          reply(13, body.error);
          return;
        }
        try {
          if (headers[':path'] === '/phalanx.Consensus/AppendEntries') {
            const req = decodeAppendEntriesRequest(body.message);
            this.received.push(req);
            reply(0, '', encodeAppendEntriesResponse(this.appendEntries(req)));
          } else if (headers[':path'] === '/phalanx.Consensus/RequestVote') {
            const req = decodeRequestVoteRequest(body.message);
            reply(0, '', encodeRequestVoteResponse({ Term: this.term, VoteGranted: false, IsPreVote: req.IsPreVote }));
          } else {
            reply(12, `unknown method ${String(headers[':path'])}`);
          }
        } catch (err) {
          reply(13, `grpc: error unmarshalling request: ${(err as Error).message}`);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.server = server;
    this.port = (server.address() as { port: number }).port;
    return this.port;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server === null) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      // Sessions the bridge keeps open would hold close() forever.
      setTimeout(resolve, 500).unref();
    });
  }
}

/**
 * Phalanx's debug HTTP server (`GET /health`, `GET /debug/status`), with the
 * bytes Phalanx writes: Go's json.Encoder output, so a trailing newline,
 * map keys sorted, HTML escaping on, and /debug/status indented by two
 * spaces (SetIndent("", "  ")). Go's ServeMux answers any method on these
 * paths and `404 page not found` elsewhere.
 */
import http from 'node:http';
import { quoteGoString } from '../shared/go-json.ts';

export interface PhalanxMetrics {
  messages_sent_total: number;
  election_count: number;
  last_commit_index: number;
  proposals_total: number;
  reads_total: number;
  applied_index: number;
  current_state: string;
}

/** observability.NodeStatus, fields in Go declaration order. */
export interface PhalanxNodeStatus {
  node_id: string;
  state: string;
  term: number;
  leader_id: string;
  commit_index: number;
  applied_index: number;
  log_length: number;
  peers: string[];
  kv_size: number;
  /** Omitted from the JSON when empty (`omitempty`). */
  kv_data: Record<string, string>;
  metrics: PhalanxMetrics;
}

/** Go sorts map keys by their UTF-8 bytes, which is not JS's UTF-16 order for characters above U+FFFF. */
export function goSortedKeys(map: Record<string, string>): string[] {
  return Object.keys(map).sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
}

/** `/health`: `map[string]string{"status","node","state"}` through json.Encoder. */
export function healthBody(node: string, state: string): string {
  return `{"node":${quoteGoString(node)},"state":${quoteGoString(state)},"status":"ok"}\n`;
}

/** `/debug/status`: NodeStatus through an Encoder with SetIndent("", "  "). */
export function statusBody(s: PhalanxNodeStatus): string {
  const i1 = '\n  ';
  const i2 = '\n    ';
  const list = (items: string[]) => (items.length === 0 ? '[]' : `[${items.map((p) => i2 + quoteGoString(p)).join(',')}${i1}]`);
  const fields: string[] = [
    `"node_id": ${quoteGoString(s.node_id)}`,
    `"state": ${quoteGoString(s.state)}`,
    `"term": ${s.term}`,
    `"leader_id": ${quoteGoString(s.leader_id)}`,
    `"commit_index": ${s.commit_index}`,
    `"applied_index": ${s.applied_index}`,
    `"log_length": ${s.log_length}`,
    `"peers": ${list(s.peers)}`,
    `"kv_size": ${s.kv_size}`,
  ];
  const keys = goSortedKeys(s.kv_data);
  if (keys.length > 0) {
    fields.push(`"kv_data": {${keys.map((k) => `${i2}${quoteGoString(k)}: ${quoteGoString(s.kv_data[k] as string)}`).join(',')}${i1}}`);
  }
  const m = s.metrics;
  const metrics = [
    `"messages_sent_total": ${m.messages_sent_total}`,
    `"election_count": ${m.election_count}`,
    `"last_commit_index": ${m.last_commit_index}`,
    `"proposals_total": ${m.proposals_total}`,
    `"reads_total": ${m.reads_total}`,
    `"applied_index": ${m.applied_index}`,
    `"current_state": ${quoteGoString(m.current_state)}`,
  ];
  fields.push(`"metrics": {${metrics.map((f) => i2 + f).join(',')}${i1}}`);
  return `{${fields.map((f) => i1 + f).join(',')}\n}\n`;
}

export interface DebugSource {
  node(): string;
  state(): string;
  status(): Promise<PhalanxNodeStatus>;
}

/** Parses "host:port" (IPv6 hosts in brackets). Throws a message naming `option` when malformed. */
export function parseHostPort(value: unknown, option: string): { host: string; port: number } {
  const text = typeof value === 'string' ? value : '';
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = match === null ? NaN : Number(match[2]);
  if (match === null || port > 65535) {
    throw new Error(`${option} must be "host:port" (for example "127.0.0.1:8080"; port 0 picks a free one), not ${JSON.stringify(value)}`);
  }
  return { host: (match[1] as string).replace(/^\[|\]$/g, ''), port };
}

export function startDebugServer(listen: { host: string; port: number }, source: DebugSource, onError: (err: unknown) => void): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/health') {
      let body: string;
      try {
        body = healthBody(source.node(), source.state());
      } catch (err) {
        res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' }).end(`${(err as Error).message}\n`);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
      return;
    }
    if (path === '/debug/status') {
      source.status().then(
        (status) => res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-cache' }).end(statusBody(status)),
        (err: unknown) => {
          onError(err);
          res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' }).end(`${(err as Error)?.message ?? String(err)}\n`);
        },
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff' }).end('404 page not found\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

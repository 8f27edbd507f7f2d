/**
 * Test support for the REST API: real HTTP servers on 127.0.0.1 (port 0) and
 * a client that checks EVERY answer against openapi.json (documented status,
 * schema of the body), so any test that calls the API also tests the
 * document.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { API_BASE, type RaleApi } from '../../sidecar/src/http/api.ts';
import { check, checkResponse, loadSpec, templateOf, type OpenApiDocument } from './openapi-check.ts';

export interface Served {
  server: http.Server;
  /** Base URL, without API_BASE: what peerApiUrl returns. */
  url: string;
  close(): Promise<void>;
}

export async function serve(api: RaleApi): Promise<Served> {
  const server = http.createServer(api.app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface Answer {
  status: number;
  headers: Headers;
  /** Parsed JSON, or the text when the answer is not JSON. */
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- tests read whatever fields they check
  text: string;
}

export interface CallOptions {
  body?: unknown;
  /** Sent as is instead of JSON.stringify(body). */
  rawBody?: string;
  headers?: Record<string, string>;
  /** Override the client's token; null sends none. */
  token?: string | null;
}

export class ApiClient {
  readonly spec: OpenApiDocument = loadSpec();
  /** "METHOD template status" of every answer checked against the document. */
  readonly seen = new Set<string>();

  constructor(private readonly token: string | null) {}

  async call(baseUrl: string, method: string, path: string, options: CallOptions = {}): Promise<Answer> {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    const token = options.token === undefined ? this.token : options.token;
    if (token !== null) headers.authorization = `Bearer ${token}`;
    let body: string | undefined;
    if (options.rawBody !== undefined) body = options.rawBody;
    else if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] ??= 'application/json';
    }
    const response = await fetch(baseUrl + API_BASE + path, { method, headers, body });
    const text = await response.text();
    const contentType = response.headers.get('content-type') ?? '';
    const parsed: unknown = contentType.startsWith('application/json') ? JSON.parse(text) : text;
    const answer: Answer = { status: response.status, headers: response.headers, body: parsed, text };
    this.verify(method, path, answer, contentType);
    return answer;
  }

  get(baseUrl: string, path: string, options?: CallOptions): Promise<Answer> {
    return this.call(baseUrl, 'GET', path, options);
  }

  post(baseUrl: string, path: string, body: unknown, options: CallOptions = {}): Promise<Answer> {
    return this.call(baseUrl, 'POST', path, { ...options, body });
  }

  delete(baseUrl: string, path: string, options?: CallOptions): Promise<Answer> {
    return this.call(baseUrl, 'DELETE', path, options);
  }

  /** Throws (failing the test) when the answer does not fit the document. */
  private verify(method: string, path: string, answer: Answer, contentType: string): void {
    const template = templateOf(this.spec, path.split('?')[0] as string);
    const documented = template !== undefined && this.spec.paths[template]?.[method.toLowerCase()] !== undefined;
    let errors: string[];
    if (documented) {
      errors = checkResponse(this.spec, method, template, answer.status, contentType, answer.body);
      if (errors.length === 0) this.seen.add(`${method.toUpperCase()} ${template} ${answer.status}`);
    } else {
      // Not an operation of the document (a wrong method or path): still rale's error envelope.
      errors = answer.status < 400 ? [`${method} ${path} answered ${answer.status} but is not documented`] : check(this.spec, { $ref: '#/components/schemas/ErrorEnvelope' }, answer.body);
    }
    if (errors.length > 0) throw new Error(`answer does not match openapi.json:\n  ${errors.join('\n  ')}\nbody: ${answer.text.slice(0, 2000)}`);
  }
}

/** Parses Prometheus text format strictly enough to catch malformed output. Returns samples by series. */
export function parsePrometheus(text: string): { types: Map<string, string>; samples: Map<string, number> } {
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples = new Map<string, number>();
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  for (const line of text.slice(0, -1).split('\n')) {
    let m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$/.exec(line);
    if (m) {
      helps.add(m[1] as string);
      continue;
    }
    m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (m) {
      if (types.has(m[1] as string)) throw new Error(`TYPE of ${m[1]} given twice`);
      types.set(m[1] as string, m[2] as string);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*",?)*\})? (-?\d+(?:\.\d+)?(?:e[+-]?\d+)?|NaN|\+Inf|-Inf)$/.exec(line);
    if (!m) throw new Error(`malformed line: ${JSON.stringify(line)}`);
    const name = m[1] as string;
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count)$/, '');
    if (!types.has(family)) throw new Error(`sample ${name} before its TYPE`);
    if (!helps.has(family)) throw new Error(`sample ${name} without HELP`);
    const series = name + (m[2] ?? '');
    if (samples.has(series)) throw new Error(`duplicate series ${series}`);
    samples.set(series, Number((m[3] as string).replace('+Inf', 'Infinity')));
  }
  return { types, samples };
}

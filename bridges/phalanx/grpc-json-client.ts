/**
 * A minimal unary gRPC client over node:http2 that sends
 * `content-type: application/grpc+json`.
 *
 * Why not @grpc/grpc-js: its client always sends `application/grpc`
 * (hard-coded, metadata cannot change it), and a real Phalanx server (grpc-go
 * with a codec registered as `json`) picks its codec from the content-subtype:
 * given plain `application/grpc` it uses protobuf and fails on Phalanx's
 * structs. So the bridge speaks gRPC's framing itself: one HTTP/2 POST per
 * call, the message as a length-prefixed frame (1 byte "compressed" = 0, 4
 * bytes big-endian length, the JSON), the answer's frame read back and its
 * status taken from the `grpc-status` / `grpc-message` trailers (or headers,
 * for a trailers-only answer).
 */
import http2 from 'node:http2';

/** gRPC status codes used here (the numbers are the protocol's). */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  RESOURCE_EXHAUSTED: 8,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

/** A call that did not end with grpc-status 0; `code` is the gRPC status. */
export class GrpcCallError extends Error {
  constructor(
    readonly code: number,
    readonly details: string,
    readonly path: string,
    readonly authority: string,
  ) {
    super(`gRPC ${path} to ${authority} failed with status ${code}: ${details}`);
    this.name = 'GrpcCallError';
  }
}

/** Largest answer accepted (grpc-go's default receive limit). */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

export interface GrpcJsonClientOptions {
  /** Sent as the `content-type`; Phalanx needs `application/grpc+json`. */
  contentType?: string;
  userAgent?: string;
}

/** Percent-decodes grpc-message as the gRPC spec encodes it; leaves a malformed one as it is. */
function decodeGrpcMessage(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

export function frame(message: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + message.byteLength);
  out.writeUInt8(0, 0);
  out.writeUInt32BE(message.byteLength, 1);
  out.set(message, 5);
  return out;
}

/**
 * Reads the single message of a unary answer's body. Returns an error
 * description instead of throwing, for the caller to wrap.
 */
export function unframe(body: Buffer): { message: Buffer } | { error: string } {
  if (body.length < 5) return { error: `the answer has ${body.length} body bytes, less than a gRPC frame header` };
  if (body.readUInt8(0) !== 0) return { error: 'the answer is compressed; this client sends no grpc-accept-encoding and cannot read it' };
  const length = body.readUInt32BE(1);
  if (body.length !== 5 + length) return { error: `the answer's frame says ${length} bytes but the body holds ${body.length - 5}` };
  return { message: body.subarray(5) };
}

export class GrpcJsonClient {
  private session: http2.ClientHttp2Session | null = null;
  private closed = false;
  private readonly contentType: string;
  private readonly userAgent: string;

  /** `authority` is host:port (no scheme). */
  constructor(
    readonly authority: string,
    options: GrpcJsonClientOptions = {},
  ) {
    this.contentType = options.contentType ?? 'application/grpc+json';
    this.userAgent = options.userAgent ?? 'rale-phalanx-bridge';
  }

  private connect(): http2.ClientHttp2Session {
    if (this.session !== null && !this.session.closed && !this.session.destroyed) return this.session;
    const session = http2.connect(`http://${this.authority}`);
    // The session must not keep the process alive on its own; close() ends it.
    session.unref();
    const forget = () => {
      if (this.session === session) this.session = null;
    };
    session.on('error', forget);
    session.on('goaway', forget);
    session.on('close', forget);
    this.session = session;
    return session;
  }

  /** One unary call: sends `request` (the message bytes) and resolves with the answer's message bytes. */
  unary(path: string, request: Uint8Array, timeoutMs: number): Promise<Buffer> {
    if (this.closed) return Promise.reject(new GrpcCallError(GrpcCode.CANCELLED, 'the client is closed', path, this.authority));
    return new Promise<Buffer>((resolve, reject) => {
      let settled = false;
      const chunks: Buffer[] = [];
      let received = 0;
      let status: number | null = null;
      let message = '';
      let httpStatus = 0;
      let contentType = '';
      const finish = (err: Error | null, value?: Buffer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err !== null) reject(err);
        else resolve(value as Buffer);
      };
      const fail = (code: number, details: string) => finish(new GrpcCallError(code, details, path, this.authority));

      let stream: http2.ClientHttp2Stream;
      try {
        stream = this.connect().request({
          ':method': 'POST',
          ':path': path,
          'content-type': this.contentType,
          te: 'trailers',
          'grpc-timeout': `${Math.max(1, Math.ceil(timeoutMs))}m`,
          'user-agent': this.userAgent,
        });
      } catch (err) {
        this.session = null;
        fail(GrpcCode.UNAVAILABLE, `cannot open a stream: ${(err as Error).message}`);
        return;
      }
      const timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        fail(GrpcCode.DEADLINE_EXCEEDED, `no answer within ${timeoutMs} ms`);
      }, timeoutMs);

      const takeStatus = (headers: http2.IncomingHttpHeaders) => {
        const raw = headers['grpc-status'];
        if (raw !== undefined) {
          status = Number(Array.isArray(raw) ? raw[0] : raw);
          const m = headers['grpc-message'];
          message = m === undefined ? '' : decodeGrpcMessage(String(Array.isArray(m) ? m[0] : m));
        }
      };
      stream.on('response', (headers) => {
        httpStatus = Number(headers[':status'] ?? 0);
        contentType = String(headers['content-type'] ?? '');
        takeStatus(headers);
      });
      stream.on('trailers', takeStatus);
      stream.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > 5 + MAX_RESPONSE_BYTES) {
          stream.close(http2.constants.NGHTTP2_CANCEL);
          fail(GrpcCode.RESOURCE_EXHAUSTED, `the answer exceeds ${MAX_RESPONSE_BYTES} bytes`);
          return;
        }
        chunks.push(chunk);
      });
      stream.on('error', (err) => fail(GrpcCode.UNAVAILABLE, err.message));
      stream.on('close', () => {
        if (settled) return;
        if (httpStatus !== 200) {
          fail(httpStatus === 0 ? GrpcCode.UNAVAILABLE : GrpcCode.UNKNOWN, httpStatus === 0 ? 'the connection closed before an answer' : `HTTP status ${httpStatus}`);
          return;
        }
        if (status === null) {
          fail(GrpcCode.INTERNAL, 'the answer has no grpc-status');
          return;
        }
        if (status !== GrpcCode.OK) {
          fail(status, message);
          return;
        }
        if (!contentType.startsWith('application/grpc')) {
          fail(GrpcCode.UNKNOWN, `the answer's content-type is ${JSON.stringify(contentType)}, not application/grpc`);
          return;
        }
        const body = unframe(Buffer.concat(chunks));
        if ('error' in body) fail(GrpcCode.INTERNAL, body.error);
        else finish(null, body.message);
      });
      stream.end(frame(request));
    });
  }

  close(): void {
    this.closed = true;
    const session = this.session;
    this.session = null;
    if (session !== null && !session.destroyed) session.destroy();
  }
}

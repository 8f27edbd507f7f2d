/**
 * The inbound side: `POST /_clusterc/<clusterId>/<op>` on a rale node, with
 * the reference server's HTTP behaviour (docs/protocols/clusterconsensus.md):
 *
 * - a method other than POST, or a path whose end names no operation: 400,
 *   empty body;
 * - a body that is empty or cannot be read: 500 with a bare Err ERR_IO; one
 *   json.Unmarshal would reject: 500 with a bare Err ERR_ENCODING;
 * - everything else: 200 with the operation's response, errors inside it.
 * - another cluster's path: 404 as Go's ServeMux (`404 page not found`);
 *   `/_clusterc/<clusterId>` without the slash: 301 to it with the slash.
 *
 * The op is found as the reference does: the first of prepare, accept,
 * addmember, rmmember, start, submit that the path ends with.
 */
import type { Request, RequestHandler, Response } from 'express';
import {
  encodeErr,
  encodeGenericResponse,
  encodePrepareResponse,
  makeErr,
  readOperationRequest,
  UNDECODABLE_BODY_HTTP_STATUS,
  type Err,
  type GenericResponse,
  type Operation,
  type OperationRequest,
} from './codec.ts';

/** What the rale side does with each decoded request. */
export interface InboundHandlers {
  /** Proposes the changes into rale; resolves with the answer to send. */
  submit(changes: Array<Uint8Array | null> | null): Promise<GenericResponse>;
  /** Answer to a foreign candidate's prepare: rale nodes never grant (see denyPrepare). */
  prepare(instance: number): { Accepted: number; Err: Err } | null;
  /** Answer to accept / addmember / rmmember / start sent to a rale node. */
  refuseParticipantOp(op: Operation): GenericResponse;
}

const OPS_BY_SUFFIX: Operation[] = ['prepare', 'accept', 'addmember', 'rmmember', 'start', 'submit'];

/** Go writes JSON bodies without a Content-Type; its server sniffs this one. */
const GO_SNIFFED_TYPE = 'text/plain; charset=utf-8';

function send(res: Response, status: number, body: string): void {
  res.status(status);
  if (body !== '') res.set('content-type', GO_SNIFFED_TYPE);
  res.end(body);
}

/** Reads the raw body, up to `limit` bytes; null when it cannot be read or is too large. */
function readBody(req: Request, limit: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (value: Buffer | null) => {
      if (done) return;
      done = true;
      resolve(value);
    };
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        finish(null);
        req.resume(); // drain the rest so the answer can go out
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => finish(Buffer.concat(chunks)));
    req.on('error', () => finish(null));
    req.on('aborted', () => finish(null));
  });
}

export function createClusterConsensusHandler(options: { clusterId: string; maxBodyBytes: number; handlers: InboundHandlers }): RequestHandler {
  const { clusterId, maxBodyBytes, handlers } = options;
  const base = `/_clusterc/${clusterId}/`;
  return async (req, res, next) => {
    // Exact (case-sensitive) path, as Go's mux sees it; express matched the mount point loosely.
    const path = req.originalUrl.split('?')[0] ?? '';
    if (!path.startsWith('/_clusterc/')) return next();
    if (path === base.slice(0, -1)) {
      res.status(301).set('location', base).end();
      return;
    }
    if (!path.startsWith(base)) {
      send(res, 404, '404 page not found\n');
      return;
    }
    if (req.method !== 'POST') {
      send(res, 400, '');
      return;
    }
    const op = OPS_BY_SUFFIX.find((candidate) => path.endsWith(candidate));
    if (op === undefined) {
      send(res, 400, '');
      return;
    }
    const body = await readBody(req, maxBodyBytes);
    if (body === null) {
      send(res, UNDECODABLE_BODY_HTTP_STATUS, encodeErr(makeErr('ERR_IO', "Couldn't read request")));
      return;
    }
    const read = readOperationRequest(op, body);
    if (!read.ok) {
      send(res, read.httpStatus, encodeErr(read.err));
      return;
    }
    const answer = await dispatch(read.value, handlers);
    send(res, answer.status, answer.body);
  };
}

async function dispatch(request: OperationRequest, handlers: InboundHandlers): Promise<{ status: number; body: string }> {
  switch (request.op) {
    case 'prepare': {
      const answer = handlers.prepare(request.request.Instance);
      // No answer above the request's instance exists in a u64 the codec can write: refuse at the HTTP level, which the candidate counts as a failed call.
      if (answer === null) return { status: UNDECODABLE_BODY_HTTP_STATUS, body: encodeErr(makeErr('ERR_DENIED', 'instance too large')) };
      return { status: 200, body: encodePrepareResponse(answer) };
    }
    case 'submit':
      return { status: 200, body: encodeGenericResponse(await handlers.submit(request.request.Changes)) };
    default:
      return { status: 200, body: encodeGenericResponse(handlers.refuseParticipantOp(request.op)) };
  }
}

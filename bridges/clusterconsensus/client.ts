/**
 * The master's side of the clusterconsensus HTTP transport: POSTs one
 * operation to a participant and reads its answer as the reference client
 * does (any status but 200 is ERR_CALL; an Accepted=false answer is its Err).
 */
import {
  ClusterConsensusDecodeError,
  decodeGenericResponse,
  decodePrepareResponse,
  encodeAcceptRequest,
  encodeChangeMemberRequest,
  encodePrepareRequest,
  encodeStartParticipationRequest,
  errForHttpStatus,
  makeErr,
  type AcceptRequest,
  type ChangeMemberRequest,
  type Err,
  type PrepareResponse,
  type StartParticipationRequest,
} from './codec.ts';

/** A failed call: `err` is the clusterconsensus error (ERR_CALL for transport failures). */
export class ConsensusCallError extends Error {
  constructor(readonly op: string, readonly err: Err) {
    super(`${op}: ${err.Err || err.Code}`);
    this.name = 'ConsensusCallError';
  }
}

export class ParticipantClient {
  constructor(
    /** The participant's base URL, e.g. http://127.0.0.1:9001. */
    readonly url: string,
    private readonly clusterId: string,
    private readonly timeoutMs: number,
  ) {}

  private async post(op: string, body: string): Promise<string> {
    let response: Response;
    try {
      response = await fetch(`${this.url}/_clusterc/${this.clusterId}/${op}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw new ConsensusCallError(op, makeErr('ERR_CALL', `HTTP Error: ${(err as Error).message}`));
    }
    const text = await response.text().catch((err: unknown) => {
      throw new ConsensusCallError(op, makeErr('ERR_IO', `Couldn't read from body: ${(err as Error).message}`));
    });
    const statusErr = errForHttpStatus(response.status);
    if (statusErr !== null) throw new ConsensusCallError(op, statusErr);
    return text;
  }

  private decode<T>(op: string, decode: (text: string) => T, text: string): T {
    try {
      return decode(text);
    } catch (err) {
      if (err instanceof ClusterConsensusDecodeError) throw new ConsensusCallError(op, makeErr('ERR_ENCODING', `Couldn't decode body: ${err.message}`));
      throw err;
    }
  }

  private async generic(op: string, body: string): Promise<void> {
    const answer = this.decode(op, decodeGenericResponse, await this.post(op, body));
    if (!answer.Accepted) throw new ConsensusCallError(op, answer.Err);
  }

  /** The reference client returns Accepted and ignores Err; the Err is kept here for diagnosis. */
  async prepare(instance: number, master: string): Promise<PrepareResponse> {
    return this.decode('prepare', decodePrepareResponse, await this.post('prepare', encodePrepareRequest({ Instance: instance, Master: { Addr: master } })));
  }

  accept(request: AcceptRequest): Promise<void> {
    return this.generic('accept', encodeAcceptRequest(request));
  }

  addMember(request: ChangeMemberRequest): Promise<void> {
    return this.generic('addmember', encodeChangeMemberRequest(request));
  }

  removeMember(request: ChangeMemberRequest): Promise<void> {
    return this.generic('rmmember', encodeChangeMemberRequest(request));
  }

  start(request: StartParticipationRequest): Promise<void> {
    return this.generic('start', encodeStartParticipationRequest(request));
  }
}

/**
 * The clusterconsensus endpoints (bridges/clusterconsensus/server.ts) and the
 * master's client reading participant answers, fuzzed: whatever arrives, the
 * answer is the protocol's own (400 for a wrong method or op, 500 with a bare
 * ERR_IO / ERR_ENCODING Err for an undecodable body, 200 with a response
 * otherwise), and the client only ever fails with a ConsensusCallError.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import test from 'ava';
import fc from 'fast-check';
import { createClusterConsensusHandler } from '../../bridges/clusterconsensus/server.ts';
import { ConsensusCallError, ParticipantClient } from '../../bridges/clusterconsensus/client.ts';
import { changeToCommand, opaqueChangeKey } from '../../bridges/clusterconsensus/changes.ts';
import { parseOptions } from '../../bridges/clusterconsensus/index.ts';
import {
  decodeErr,
  decodeGenericResponse,
  decodePrepareResponse,
  encodeAcceptRequest,
  encodeChangeMemberRequest,
  encodePrepareRequest,
  encodeStartParticipationRequest,
  encodeSubmitRequest,
  makeErr,
  NO_ERR,
} from '../../bridges/clusterconsensus/codec.ts';

const OPS = ['prepare', 'accept', 'addmember', 'rmmember', 'start', 'submit'] as const;
const submitted: Array<Array<Uint8Array | null> | null> = [];

async function listen(app: express.Express): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let base = '';
let closeServer: () => Promise<void> = async () => {};

test.before(async () => {
  const app = express();
  app.use(
    '/_clusterc',
    createClusterConsensusHandler({
      clusterId: 'rale',
      maxBodyBytes: 4096,
      handlers: {
        submit: async (changes) => {
          submitted.push(changes);
          return { Accepted: true, Err: { ...NO_ERR } };
        },
        prepare: (instance) => (instance >= Number.MAX_SAFE_INTEGER ? null : { Accepted: instance + 1, Err: makeErr('ERR_DENIED', 'no') }),
        refuseParticipantOp: (op) => ({ Accepted: false, Err: makeErr('ERR_DENIED', `${op} refused`) }),
      },
    }),
  );
  app.use((_req, res) => void res.status(404).end('fell through'));
  const s = await listen(app);
  base = s.url;
  closeServer = s.close;
});

test.after.always(() => closeServer());

const post = (path: string, body: string, method = 'POST') => fetch(`${base}${path}`, { method, body: method === 'GET' ? undefined : body });

test('HTTP statuses as the reference server', async (t) => {
  t.is((await fetch(`${base}/_clusterc/rale/submit`)).status, 400, 'GET');
  t.is((await post('/_clusterc/rale/nothing', '{}')).status, 400, 'no op at the end of the path');
  t.is((await post('/_clusterc/other/submit', '{}')).status, 404, 'another cluster');
  const redirect = await fetch(`${base}/_clusterc/rale`, { method: 'POST', redirect: 'manual' });
  t.is(redirect.status, 301);
  const empty = await post('/_clusterc/rale/accept', '');
  t.is(empty.status, 500);
  t.is(decodeErr(await empty.text()).Code, 'ERR_IO');
  const big = await post('/_clusterc/rale/submit', `{"Changes":["${'A'.repeat(8000)}"]}`);
  t.is(big.status, 500, 'over maxBodyBytes');
  t.is(decodeErr(await big.text()).Code, 'ERR_IO');
  const ok = await post('/_clusterc/rale/x/submit', encodeSubmitRequest({ Changes: [new Uint8Array([1, 2])] }));
  t.is(ok.status, 200, 'the op is the path suffix');
  t.deepEqual(decodeGenericResponse(await ok.text()), { Accepted: true, Err: { Code: '', Err: '' } });
  const lower = await post('/_clusterc/rale/submit', '{"changes":["AQI="]}');
  t.deepEqual(decodeGenericResponse(await lower.text()).Accepted, true, 'keys match case-insensitively');
  t.deepEqual(submitted.at(-1), [new Uint8Array([1, 2])]);
  const prepare = await post('/_clusterc/rale/prepare', encodePrepareRequest({ Instance: 7, Master: { Addr: 'http://x' } }));
  t.is(decodePrepareResponse(await prepare.text()).Accepted, 8, 'denied: above the candidate\'s number');
  const start = await post('/_clusterc/rale/start', encodeStartParticipationRequest({ Instance: 1, Sequence: 0, Cluster: 'rale', Self: { Addr: 'a' }, Master: { Addr: 'b' }, Participants: null, Snapshot: null }));
  t.is(decodeGenericResponse(await start.text()).Err.Code, 'ERR_DENIED');
});

function validBody(op: (typeof OPS)[number]): fc.Arbitrary<string> {
  const u = fc.nat({ max: 1e9 });
  const bytes = fc.oneof(fc.constant(null), fc.uint8Array({ maxLength: 20 }));
  const addr = fc.record({ Addr: fc.string({ maxLength: 10 }) });
  switch (op) {
    case 'prepare':
      return fc.record({ Instance: u, Master: addr }).map(encodePrepareRequest);
    case 'accept':
      return fc.record({ Instance: u, Sequence: u, Changes: fc.oneof(fc.constant(null), fc.array(bytes, { maxLength: 3 })) }).map(encodeAcceptRequest);
    case 'addmember':
    case 'rmmember':
      return fc.record({ Instance: u, Sequence: u, Mem: addr }).map(encodeChangeMemberRequest);
    case 'start':
      return fc
        .record({ Instance: u, Sequence: u, Cluster: fc.string({ maxLength: 5 }), Self: addr, Master: addr, Participants: fc.oneof(fc.constant(null), fc.array(addr, { maxLength: 2 })), Snapshot: bytes })
        .map(encodeStartParticipationRequest);
    case 'submit':
      return fc.record({ Changes: fc.oneof(fc.constant(null), fc.array(bytes, { maxLength: 3 })) }).map(encodeSubmitRequest);
  }
}

/** Random text, random JSON, and valid bodies with one character changed, dropped or inserted. */
const bodyFor = (op: (typeof OPS)[number]) =>
  fc.oneof(
    fc.string({ maxLength: 60 }),
    fc.json({ maxDepth: 3 }),
    fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.from(b).toString('latin1')),
    fc.tuple(validBody(op), fc.nat(), fc.string({ minLength: 0, maxLength: 2 }), fc.boolean()).map(([body, at, insert, drop]) => {
      const k = at % (body.length + 1);
      return body.slice(0, k) + insert + body.slice(drop ? k + 1 : k);
    }),
    validBody(op),
  );

test('fuzz: every body gets 200 with a response or 500 with a bare ERR_IO / ERR_ENCODING, never anything else', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...OPS).chain((op) => fc.tuple(fc.constant(op), bodyFor(op))), async ([op, body]) => {
      const response = await post(`/_clusterc/rale/${op}`, body);
      const text = await response.text();
      if (response.status === 500) {
        const err = decodeErr(text);
        return err.Code === 'ERR_ENCODING' || err.Code === 'ERR_IO' || (op === 'prepare' && err.Code === 'ERR_DENIED');
      }
      if (response.status !== 200) return false;
      if (op === 'prepare') decodePrepareResponse(text);
      else decodeGenericResponse(text);
      return true;
    }),
    { numRuns: 200 },
  );
  t.pass();
});

test('fuzz: the master\'s client turns any participant answer into a result or a ConsensusCallError', async (t) => {
  let answer: { status: number; body: string } = { status: 200, body: '' };
  const app = express();
  app.use((req, res) => {
    req.resume();
    res.status(answer.status).end(answer.body);
  });
  const s = await listen(app);
  t.teardown(() => s.close());
  const client = new ParticipantClient(s.url, 'rale', 2000);
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(200, 200, 200, 400, 500), fc.oneof(fc.string({ maxLength: 40 }), fc.json({ maxDepth: 2 }), fc.constant('{"Accepted":true}')), async (status, body) => {
      answer = { status, body };
      for (const call of [() => client.prepare(1, 'http://m'), () => client.accept({ Instance: 1, Sequence: 1, Changes: [] })]) {
        try {
          await call();
        } catch (err) {
          if (!(err instanceof ConsensusCallError)) return false;
        }
      }
      return true;
    }),
    { numRuns: 200 },
  );
  const refused = await new ParticipantClient('http://127.0.0.1:1', 'rale', 500).accept({ Instance: 1, Sequence: 1, Changes: null }).catch((err: unknown) => err);
  t.true(refused instanceof ConsensusCallError && refused.err.Code === 'ERR_CALL', 'an unreachable participant is ERR_CALL');
});

test('fuzz: any change maps to a rale command; rale kv commands stay themselves, the rest is stored whole', (t) => {
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.json().map((j) => new TextEncoder().encode(j))), (bytes) => {
      const command = changeToCommand(bytes, 'rale');
      if ('handler' in command) return false;
      if (command.op === 'set' && command.key === opaqueChangeKey('rale', bytes)) return Buffer.from(command.value as string, 'base64').equals(Buffer.from(bytes));
      return command.key.length >= 0;
    }),
  );
  t.deepEqual(changeToCommand(new TextEncoder().encode('{"op":"delete","key":"k","extra":1}'), 'rale'), { op: 'delete', key: 'k' });
});

test('options are validated with errors naming the option', (t) => {
  t.throws(() => parseOptions({}), { message: /option advertiseUrl is required/ });
  t.throws(() => parseOptions({ advertiseUrl: 'ftp://x' }), { message: /advertiseUrl must be an http/ });
  t.throws(() => parseOptions({ advertiseUrl: 'http://x', clusterId: 'a/b' }), { message: /option clusterId/ });
  t.throws(() => parseOptions({ advertiseUrl: 'http://x', retryMs: -1 }), { message: /option retryMs must be a positive integer/ });
  t.throws(() => parseOptions({ advertiseUrl: 'http://x', clusterID: 'a' }), { message: /option clusterID is unknown/ });
  t.like(parseOptions({ advertiseUrl: 'http://x:1/' }), { advertiseUrl: 'http://x:1', clusterId: 'rale', retryMs: 1000 });
});

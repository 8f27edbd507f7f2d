/** Shared by the GrpcTransport tests: servers that record what they get, certificates made with openssl. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { GrpcTransport, type GrpcTransportOptions, type LogFn, type SecurityEvent } from '../../sidecar/src/transport/grpc.ts';
import type { InvokeHandler } from '../../sidecar/src/node/transport.ts';

export interface Received {
  type: string;
  args: unknown;
  from: string;
}

export interface TestServer {
  transport: GrpcTransport;
  address: string;
  port: number;
  received: Received[];
  events: SecurityEvent[];
  logs: string[];
}

/** Log lines kept in memory: tests stay quiet, and can look. */
export function memoryLog(lines: string[]): LogFn {
  return (level, message) => void lines.push(`${level}: ${message}`);
}

/** By default answers every call with what it received. */
export const echo: InvokeHandler = async (type, args, from) => ({ type, args, from });

/** A listening transport bound to 127.0.0.1:0 (unless options say otherwise), closed when the test ends. */
export async function startServer(
  t: ExecutionContext,
  id: string,
  options: GrpcTransportOptions = {},
  handler: InvokeHandler = echo,
): Promise<TestServer> {
  const received: Received[] = [];
  const events: SecurityEvent[] = [];
  const logs: string[] = [];
  const transport = new GrpcTransport({
    listen: { host: '127.0.0.1', port: 0 },
    log: memoryLog(logs),
    onSecurityEvent: (e) => void events.push(e),
    ...options,
  });
  t.teardown(() => transport.close());
  await transport.listen(id, async (type, args, from) => {
    received.push({ type, args, from });
    return handler(type, args, from);
  });
  return { transport, address: transport.address, port: transport.port, received, events, logs };
}

/** A transport used only to connect (its server is never bound), closed when the test ends. */
export function client(t: ExecutionContext, options: GrpcTransportOptions = {}): GrpcTransport {
  const logs: string[] = [];
  const transport = new GrpcTransport({ log: memoryLog(logs), ...options });
  t.teardown(() => transport.close());
  return transport;
}

export async function waitFor<T>(what: string, probe: () => T | undefined | null | false | Promise<T | undefined | null | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export interface Pem {
  cert: string;
  key: string;
}

export interface Pki {
  /** The cluster CA and certificates it signed, by node id (CN and DNS subjectAltName = the id). */
  ca: string;
  nodes: Record<string, Pem>;
  /** A CA nobody trusts, and a certificate it signed for `intruder`. */
  otherCa: string;
  intruder: Pem;
}

/** Generates two CAs and node certificates (EC P-256, one day) in a temporary directory, then removes it. */
export function makePki(nodeIds: string[]): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'rale-pki-'));
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    const makeCa = (name: string) => {
      openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '1', '-subj', `/CN=${name}`);
    };
    const issue = (ca: string, id: string): Pem => {
      openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${id}.key`, '-out', `${id}.csr`, '-subj', `/CN=${id}`);
      writeFileSync(join(dir, `${id}.ext`), `subjectAltName=DNS:${id}\n`);
      openssl('x509', '-req', '-in', `${id}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${id}.crt`, '-days', '1', '-extfile', `${id}.ext`);
      return { cert: readFileSync(join(dir, `${id}.crt`), 'utf8'), key: readFileSync(join(dir, `${id}.key`), 'utf8') };
    };
    makeCa('cluster-ca');
    makeCa('other-ca');
    const nodes: Record<string, Pem> = {};
    for (const id of nodeIds) nodes[id] = issue('cluster-ca', id);
    const intruder = issue('other-ca', 'intruder');
    return { ca: readFileSync(join(dir, 'cluster-ca.crt'), 'utf8'), nodes, otherCa: readFileSync(join(dir, 'other-ca.crt'), 'utf8'), intruder };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

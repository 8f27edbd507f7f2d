/**
 * The link proxy the cluster tests cut and heal: bytes pass both ways; a
 * blackhole holds them (nothing arrives, the connection stays open) and
 * healing delivers them in order; a reset cut resets open connections and
 * new ones; latency delays delivery; a one-way cut leaves the other link up.
 */
import net from 'node:net';
import test from 'ava';
import { LinkProxy, ProxyMesh } from './proxy.ts';

/** A server that answers every chunk with `echo:<chunk>`. */
async function echoServer(t: { teardown(fn: () => Promise<void> | void): void }): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('data', (chunk) => socket.write(`echo:${chunk.toString()}`));
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as net.AddressInfo).port;
}

/** A client connection that collects what it receives and how it ended. */
async function client(port: number): Promise<{ socket: net.Socket; received: () => string; ended: Promise<string> }> {
  const socket = net.connect(port, '127.0.0.1');
  let text = '';
  socket.on('data', (chunk) => (text += chunk.toString()));
  const ended = new Promise<string>((resolve) => {
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    socket.on('close', () => resolve('closed'));
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, received: () => text, ended };
}

async function until(what: string, probe: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('bytes pass both ways; a blackhole holds them, and healing delivers them in order', async (t) => {
  const proxy = new LinkProxy('a->b', await echoServer(t));
  t.teardown(() => proxy.close());
  const c = await client(await proxy.listen());
  c.socket.write('one');
  await until('the first echo', () => c.received() === 'echo:one');

  proxy.cut();
  t.true(proxy.isCut);
  c.socket.write('two');
  await sleep(300);
  t.is(c.received(), 'echo:one', 'nothing crosses a blackholed link');
  t.false(c.socket.destroyed, 'the connection stays open, as in a real partition');
  // A connection made during the cut is accepted but goes nowhere until healed.
  const late = await client(proxy.port);
  late.socket.write('late');
  await sleep(200);
  t.is(late.received(), '');

  proxy.heal();
  await until('the held bytes to arrive', () => c.received().endsWith('echo:two'));
  await until('the late connection to be served', () => late.received() === 'echo:late');
  c.socket.destroy();
  late.socket.destroy();
});

test('a reset cut resets open connections and refuses new ones until healed', async (t) => {
  const proxy = new LinkProxy('a->b', await echoServer(t));
  t.teardown(() => proxy.close());
  const port = await proxy.listen();
  const c = await client(port);
  proxy.cut('reset');
  t.is(await c.ended, 'ECONNRESET');
  const refused = net.connect(port, '127.0.0.1');
  const outcome = await new Promise<string>((resolve) => {
    refused.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    refused.on('close', () => resolve('closed'));
    refused.on('data', () => resolve('data'));
    refused.write('hello?');
  });
  t.true(outcome === 'ECONNRESET' || outcome === 'closed', outcome);

  proxy.heal();
  const again = await client(port);
  again.socket.write('back');
  await until('an echo after healing', () => again.received() === 'echo:back');
  again.socket.destroy();
});

test('latency delays every chunk each way, in order', async (t) => {
  const proxy = new LinkProxy('a->b', await echoServer(t));
  t.teardown(() => proxy.close());
  const c = await client(await proxy.listen());
  proxy.setLatency(150);
  const started = Date.now();
  c.socket.write('x');
  await until('the delayed echo', () => c.received() === 'echo:x');
  // Both directions are delayed: at least two latencies (a lower bound, not a speed).
  t.true(Date.now() - started >= 290, `echo came back after ${Date.now() - started} ms`);
  proxy.setLatency(0);
  c.socket.destroy();
});

test('a mesh cuts one direction of a pair of nodes, and heals all', async (t) => {
  const mesh = new ProxyMesh();
  t.teardown(() => mesh.close());
  const ab = await mesh.add('a', 'b', await echoServer(t));
  const ba = await mesh.add('b', 'a', await echoServer(t));
  t.is(mesh.link('a', 'b'), ab);
  t.deepEqual(mesh.touching('a').sort((x, y) => x.name.localeCompare(y.name)), [ab, ba]);
  t.throws(() => mesh.link('a', 'c'), { message: /no proxy for the link a -> c/ });

  ab.cut();
  const fromA = await client(ab.port);
  const fromB = await client(ba.port);
  fromA.socket.write('1');
  fromB.socket.write('2');
  await until('b -> a still works', () => fromB.received() === 'echo:2');
  t.is(fromA.received(), '');
  mesh.healAll();
  await until('a -> b after healing', () => fromA.received() === 'echo:1');
  fromA.socket.destroy();
  fromB.socket.destroy();
});

// Three rale nodes in one process, on the in-memory network and storage.
// Run: npx tsx examples/three-nodes.ts
import { MemoryNetwork, Node } from '../sidecar/src/index.ts';

const network = new MemoryNetwork();
const ids = ['node1', 'node2', 'node3'];
const nodes = ids.map((id) => new Node({ id, cluster: 'demo', transport: network.transport(), bootstrap: ids }));
await Promise.all(nodes.map((node) => node.start()));

// Wait for an election, then write through any node: followers forward to the leader.
const leader = await new Promise<Node>((resolve) => {
  for (const node of nodes) node.once('leader', () => resolve(node));
});
console.log(`leader: ${leader.id}`);

const follower = nodes.find((node) => node !== leader) as Node;
console.log('set   ->', await follower.command({ op: 'set', key: 'greeting', value: 'hello' }));
console.log('cas   ->', await leader.command({ op: 'cas', key: 'greeting', expected: 'hello', value: 'hi' }));

// A linearizable read from a follower's local state.
await follower.readBarrier();
console.log('peers of', follower.id, '->', follower.peers);

await Promise.all(nodes.map((node) => node.stop()));

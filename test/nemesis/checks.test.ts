/**
 * The nemesis run's checks bite: on made-up histories and node images, each
 * kind of damage (a stale read, an audit row applied twice, an acknowledged
 * call missing, a refused call applied, nodes that differ, two results at
 * one index, an acknowledged proposal without a result) fails its check,
 * and the undamaged run passes them all.
 */
import test from 'ava';
import { okOp, unknownOp, type KvInput, type KvOutput, type Operation } from '../lincheck/index.ts';
import { checkRun, type NodeImage } from './audit.ts';
import { parseRecord, type AckedProposal, type AuditCall } from './workload.ts';
import { unexpectedExits } from './scenario.ts';

interface Made {
  audit: Array<{ op_id: string; pos: number }>;
  results: Array<[string, number]>;
  kv?: string;
  log?: Array<[number, string]>;
}

function image(m: Made): NodeImage {
  const results = new Map(m.results.map(([id, index]) => [id, { index, term: 2, status: 'applied', result: '{}' }]));
  return {
    applied: '{"index":"10","term":"2"}',
    kv: m.kv ?? '[{"key":"x","value":2,"version":7}]',
    results,
    resultsText: JSON.stringify([...results]),
    handlers: '[]',
    audit: m.audit,
    auditText: JSON.stringify(m.audit),
    commit: 10,
    log: new Map(m.log ?? [[9, '2:aa'], [10, '2:bb']]),
  };
}

const history: Operation<KvInput, KvOutput>[] = [
  okOp('c1', { kind: 'put', key: 'x', value: 1 }, undefined, 0, 10),
  okOp('c2', { kind: 'put', key: 'x', value: 2 }, undefined, 20, 30),
  okOp('c1', { kind: 'get', key: 'x' }, 2, 40, 50),
  unknownOp('c3', { kind: 'put', key: 'x', value: 3 }, 60),
  okOp('final', { kind: 'get', key: 'x' }, 2, 100, 110),
];
const audits: AuditCall[] = [
  { opId: 'a1', via: 'sql', proposalId: 'u1', outcome: 'ok', pos: 1, node: 'node1' },
  { opId: 'a2', via: 'rest', proposalId: 'http:a2', outcome: 'ok', pos: 2, node: 'node2' },
  { opId: 'a3', via: 'rest', proposalId: 'http:a3', outcome: 'info', pos: null, node: 'node2' },
  { opId: 'a4', via: 'sql', proposalId: null, outcome: 'fail', pos: null, node: 'node3' },
];
const acked: AckedProposal[] = [
  { proposalId: 'u1', index: 4, via: 'sql', node: 'node1' },
  { proposalId: 'http:a2', index: 8, via: 'rest', node: 'node2' }, // a retry: answered by its later duplicate entry
];
const good: Made = {
  audit: [
    { op_id: 'a1', pos: 1 },
    { op_id: 'a2', pos: 2 },
  ],
  results: [
    ['u1', 4],
    ['http:a2', 6],
    ['put-x', 7],
  ],
};

function run(made: Record<string, Made>, h = history) {
  const images = new Map(Object.entries(made).map(([id, m]) => [id, image(m)]));
  return checkRun({ history: h, images, audits, acked, lincheckTimeoutMs: 5_000 });
}

function failing(made: Record<string, Made>, h = history): string[] {
  return run(made, h)
    .filter((c) => !c.ok)
    .map((c) => `${c.name}: ${c.detail}`);
}

test('an undamaged run passes every check', (t) => {
  const checks = run({ node1: good, node2: good, node3: good });
  t.is(checks.length, 4);
  t.deepEqual(checks.filter((c) => !c.ok), []);
});

test('a stale final read fails the linearizability check', (t) => {
  const stale = [...history.slice(0, 4), okOp<KvInput, KvOutput>('final', { kind: 'get', key: 'x' }, 1, 100, 110)];
  const f = failing({ node1: good, node2: good, node3: good }, stale);
  t.is(f.length, 1);
  t.regex(f[0]!, /^linearizable.*NOT linearizable/s);
});

test('an audit row applied twice on one node fails exactly-once (and identical state)', (t) => {
  const twice: Made = { ...good, audit: [...good.audit, { op_id: 'a1', pos: 3 }] };
  const f = failing({ node1: good, node2: twice, node3: good });
  t.true(f.some((l) => /^exactly once.*node2: a1 applied 2 times/s.test(l)), f.join('\n'));
  t.true(f.some((l) => /^identical state.*audit table differs between node1 and node2/s.test(l)), f.join('\n'));
});

test('an acknowledged call missing, a refused call applied, and a wrong position are each caught', (t) => {
  const missing: Made = { ...good, audit: [{ op_id: 'a1', pos: 1 }] };
  t.true(failing({ node1: missing, node2: missing, node3: missing }).some((l) => /acknowledged call a2 .* is missing/.test(l)));
  const refused: Made = { ...good, audit: [...good.audit, { op_id: 'a4', pos: 3 }] };
  t.true(failing({ node1: refused, node2: refused, node3: refused }).some((l) => /a4 was refused \(sql\) yet applied/.test(l)));
  const swapped: Made = {
    ...good,
    audit: [
      { op_id: 'a2', pos: 1 },
      { op_id: 'a1', pos: 2 },
    ],
  };
  t.true(failing({ node1: swapped, node2: swapped, node3: swapped }).some((l) => /a1 answered position 1 but sits at 2/.test(l)));
  // An unknown call may be there once.
  const unknownOnce: Made = { ...good, audit: [...good.audit, { op_id: 'a3', pos: 3 }], results: [...good.results, ['http:a3', 9]] };
  t.deepEqual(failing({ node1: unknownOnce, node2: unknownOnce, node3: unknownOnce }), []);
});

test("rale's bookkeeping: two results at one index, an acknowledged proposal without a result or at another index, an audit row without a result", (t) => {
  const sameIndex: Made = { ...good, results: [...good.results, ['other', 7]] };
  t.true(failing({ node1: sameIndex, node2: sameIndex, node3: sameIndex }).some((l) => /both at index 7/.test(l)));
  const noResult: Made = { ...good, results: good.results.filter(([id]) => id !== 'u1') };
  const f = failing({ node1: noResult, node2: noResult, node3: noResult });
  t.true(f.some((l) => /acknowledged proposal u1 .* has no row in rale.results/.test(l)), f.join('\n'));
  t.true(f.some((l) => /a1: in the audit table, but rale.results has no row for u1/.test(l)), f.join('\n'));
  const moved: Made = { ...good, results: [['u1', 5], ['http:a2', 6], ['put-x', 7]] };
  t.true(failing({ node1: moved, node2: moved, node3: moved }).some((l) => /u1 answered index 4 \(sql\) but rale.results says 5/.test(l)));
  const restLater: Made = { ...good, results: [['u1', 4], ['http:a2', 9], ['put-x', 7]] };
  t.true(failing({ node1: restLater, node2: restLater, node3: restLater }).some((l) => /http:a2 answered index 8 \(rest\) but rale.results says 9/.test(l)));
});

test('members that differ in kv or in a committed log entry fail the identical-state check', (t) => {
  const otherKv: Made = { ...good, kv: '[{"key":"x","value":3,"version":9}]' };
  t.true(failing({ node1: good, node2: good, node3: otherKv }).some((l) => /rale.kv differs between node1 and node3/.test(l)));
  const otherLog: Made = { ...good, log: [[9, '2:aa'], [10, '3:cc']] };
  t.true(failing({ node1: good, node2: otherLog, node3: good }).some((l) => /committed entry 10 differs/.test(l)));
});

test('parseRecord reads PostgreSQL composite text as rale.submit returns it', (t) => {
  t.deepEqual(parseRecord('(applied,12,3,"{""ok"": false, ""current"": 5}",)'), ['applied', '12', '3', '{"ok": false, "current": 5}', null]);
  t.deepEqual(parseRecord('(timed_out,,,,)'), ['timed_out', null, null, null, null]);
  t.deepEqual(parseRecord('(failed,,,,"no handler ""x"", sorry")'), ['failed', null, null, null, 'no handler "x", sorry']);
  t.throws(() => parseRecord('applied'));
});

test('a sidecar that exits by itself fails the exits check; kills and clean stops do not', (t) => {
  const logs = [
    'node1 [harness] sidecar process exited (SIGKILL)',
    'node2 [harness] sidecar process exited (0)',
    'node1 [harness] sidecar started, pid 4188',
    'node1 rale: configuration: cluster.peers: has no address for the founding voter(s) node5',
    'node1 [harness] sidecar process exited (2)',
  ].join('\n');
  const check = unexpectedExits(logs);
  t.false(check.ok);
  t.regex(check.detail, /node1 exited with 2: .*no address for the founding voter/);
  t.true(unexpectedExits(logs.split('\n').slice(0, 2).join('\n')).ok);
});

/**
 * The simulator is deterministic: a seed fixes the whole run, so that every
 * failure can be replayed exactly. The trace hash covers every event (time,
 * kind, node, message, and the touched node's role, term, commit, applied
 * and last index after it).
 */
import test from 'ava';
import { runScenario, type ScenarioOptions } from '../sim/scenario.ts';

const CASES: ScenarioOptions[] = [
  { seed: 12345, nodes: 3, steps: 3000, mix: 'chaos' },
  { seed: 777, nodes: 5, steps: 3000, mix: 'membership' },
  { seed: 4242, nodes: 7, steps: 2000, mix: 'lossy' },
];

for (const options of CASES) {
  test(`seed ${options.seed} (${options.nodes} nodes, ${options.mix}) gives the same trace twice`, (t) => {
    const lines: string[] = [];
    const first = runScenario({ ...options, trace: (line) => lines.push(line) });
    const second = runScenario(options);
    t.true(first.ok, first.replay);
    t.true(lines.length > options.steps, 'the trace has a line per event');
    t.is(second.traceHash, first.traceHash);
    t.deepEqual(second.stats, first.stats);
    const other = runScenario({ ...options, seed: options.seed + 1 });
    t.not(other.traceHash, first.traceHash, 'another seed gives another run');
  });
}

test('the simulator decides nothing with Math.random or the clock', (t) => {
  const realRandom = Math.random;
  const RealDate = globalThis.Date;
  const forbidden = (what: string) => (): never => {
    throw new Error(`the simulation used ${what}`);
  };
  Math.random = forbidden('Math.random');
  globalThis.Date = new Proxy(RealDate, { construct: forbidden('new Date()'), apply: forbidden('Date()'), get: (target, key) => (key === 'now' ? forbidden('Date.now') : Reflect.get(target, key)) });
  try {
    const result = runScenario({ seed: 99, nodes: 5, steps: 2000, mix: 'chaos' });
    t.true(result.ok, result.replay);
  } finally {
    Math.random = realRandom;
    globalThis.Date = RealDate;
  }
});

test('the replay command names everything that fixes the run', (t) => {
  const result = runScenario({ seed: 31337, nodes: 5, steps: 1000, mix: 'figure8', coreFaults: { voteTwice: true } });
  t.is(result.replay, 'npm run sim -- --seed 31337 --nodes 5 --steps 1000 --mix figure8 --fault voteTwice --verbose');
});

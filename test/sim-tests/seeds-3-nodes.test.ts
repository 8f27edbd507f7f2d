/**
 * CI: 420 seeded whole-cluster scenarios with 3 voters (plus two spare nodes),
 * spread evenly over the fault mixes (seed k runs mix k mod 7). Each checks
 * every invariant after every step, then heals and requires convergence
 * within the liveness bound. A failure prints the command that replays it.
 */
import { declareSeedBatch } from '../sim/batch-tests.ts';

declareSeedBatch({ nodes: 3, first: 1, count: 420, steps: 3000 });

/**
 * CI: 350 seeded whole-cluster scenarios with 5 voters (plus two spare nodes),
 * spread evenly over the fault mixes (seed k runs mix k mod 7). Each checks
 * every invariant after every step, then heals and requires convergence
 * within the liveness bound. A failure prints the command that replays it.
 */
import { declareSeedBatch } from '../sim/batch-tests.ts';

declareSeedBatch({ nodes: 5, first: 1001, count: 350, steps: 3000 });

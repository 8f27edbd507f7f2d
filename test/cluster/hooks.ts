/**
 * ava wiring for a test file that shares one cluster among its (serial)
 * tests: started before the first, stopped after the last (whatever
 * happened), and a failed test prints the processes' log lines from its own
 * start onward.
 */
import type { TestFn } from 'ava';
import { Cluster, type ClusterOptions } from './harness.ts';

export function useCluster(test: TestFn, options: ClusterOptions): () => Cluster {
  let cluster: Cluster | null = null;
  let mark = 0;
  // Serial: before hooks of a file run concurrently otherwise, and the file's own may need the cluster.
  test.serial.before(async () => {
    cluster = await Cluster.start(options);
  });
  test.after.always(async () => {
    await cluster?.stop();
  });
  test.beforeEach(() => {
    mark = cluster?.mark() ?? 0;
  });
  test.afterEach.always((t) => {
    if (!t.passed && cluster !== null) console.error(`\n${t.title} failed.\n${cluster.failureReport(mark)}`);
  });
  return () => {
    if (cluster === null) throw new Error(`the cluster ${options.name} did not start (see the before hook's error)`);
    return cluster;
  };
}

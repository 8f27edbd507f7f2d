/**
 * Shared by the in-process sidecar tests (test/process, test/plugins): the
 * configuration of a one-node cluster on a local database, and polling.
 */
import { validateConfig, type SidecarConfig } from '../../sidecar/src/process/config.ts';

export const TEST_SECRET = 'a-test-secret-of-enough-length';

/** A founding voter `n1` alone, listening on free local ports, with fast timers. */
export function soloSidecarConfig(databaseUrl: string, bridges: unknown[] = []): SidecarConfig {
  return validateConfig({
    nodeId: 'n1',
    databaseUrl,
    peer: { listen: '127.0.0.1:0', secret: TEST_SECRET },
    api: { listen: '127.0.0.1:0' },
    cluster: { bootstrap: ['n1'] },
    raft: { tickMs: 20, electionTicks: 10, heartbeatTicks: 1, requestTimeoutMs: 3000 },
    bridges,
    logLevel: 'debug',
  });
}

/** Polls `probe` until it returns something other than undefined, or throws after timeoutMs. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000, everyMs = 10): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

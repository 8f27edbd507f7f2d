/**
 * Everything the benchmark starts registers how to stop it here. cleanup()
 * runs the registered actions newest first; it runs on normal completion, on
 * failure, and on SIGINT / SIGTERM (a second signal forces the exit, after
 * SIGKILLing the sidecars; the PostgreSQL harness's exit hook still asks its
 * servers for a fast shutdown).
 */

type Action = { name: string; run: () => Promise<void>; force?: () => void };

const actions: Action[] = [];
let running: Promise<void> | null = null;

/** Registers a stop action; returns a function that unregisters it (once the thing was stopped normally). */
export function onCleanup(name: string, run: () => Promise<void>, force?: () => void): () => void {
  const action: Action = { name, run, ...(force ? { force } : {}) };
  actions.push(action);
  return () => {
    const i = actions.indexOf(action);
    if (i >= 0) actions.splice(i, 1);
  };
}

export function cleanup(): Promise<void> {
  running ??= (async () => {
    while (actions.length > 0) {
      const action = actions.pop() as Action;
      try {
        await action.run();
      } catch (err) {
        console.error(`bench: cleanup of ${action.name} failed: ${(err as Error).message}`);
      }
    }
  })();
  return running;
}

let firstSignalAt = 0;

/** True once SIGINT or SIGTERM arrived: the run is being torn down. */
export function interrupted(): boolean {
  return firstSignalAt !== 0;
}

/** Where leftovers stay after a forced exit (printed then). */
let leftovers: string | null = null;
export function noteLeftovers(where: string): void {
  leftovers = where;
}

/**
 * A terminal's Ctrl-C reaches every process of the foreground group, and
 * npm and tsx also relay it to their child: one Ctrl-C can arrive two or three
 * times within milliseconds. Only a signal more than a second after the first
 * counts as "again".
 */
const REPEAT_AFTER_MS = 1_000;

export function installSignalHandlers(): void {
  const onSignal = (signal: NodeJS.Signals) => {
    const now = Date.now();
    if (firstSignalAt === 0) {
      firstSignalAt = now;
      console.error(`\nbench: ${signal}: stopping the sidecars and PostgreSQL servers (${signal} again to force) ...`);
      void cleanup().finally(() => process.exit(130));
    } else if (now - firstSignalAt > REPEAT_AFTER_MS) {
      console.error(`bench: forced exit: sidecars killed, PostgreSQL servers asked to shut down${leftovers ? `; data left in ${leftovers}` : ''}`);
      for (const action of actions) action.force?.();
      process.exit(130);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

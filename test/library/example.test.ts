import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import test from 'ava';

const run = promisify(execFile);

test('the README example (examples/three-nodes.ts) runs and exits by itself', async (t) => {
  const script = fileURLToPath(new URL('../../examples/three-nodes.ts', import.meta.url));
  const { stdout } = await run(process.execPath, ['--import', 'tsx', script], { timeout: 30_000 });
  t.regex(stdout, /^leader: node[123]$/m);
  t.regex(stdout, /^set {3}-> \{ ok: true \}$/m);
  t.regex(stdout, /^cas {3}-> \{ ok: true \}$/m);
  t.regex(stdout, /peers of node\d -> \[ 'node\d', 'node\d' \]/);
});

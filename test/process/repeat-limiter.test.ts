/**
 * The sidecar's limiter for repeated background errors (a lost database
 * fails every poll of the status and read services): the first report is
 * logged at once, repeats at most once per interval with the count held back.
 */
import test from 'ava';
import { RepeatLimiter } from '../../sidecar/src/process/sidecar.ts';

test('repeats of one message are held back and counted; other messages pass', (t) => {
  let now = 0;
  const out: string[] = [];
  const limiter = new RepeatLimiter((where, message, repeats) => out.push(`${where}: ${message} +${repeats}`), 5_000, () => now);
  limiter.report('status', 'connection refused');
  for (let k = 0; k < 50; k++) {
    now += 50;
    limiter.report('status', 'connection refused');
  }
  limiter.report('read', 'connection refused'); // another source
  limiter.report('status', 'timeout'); // another message
  t.deepEqual(out, ['status: connection refused +0', 'read: connection refused +0', 'status: timeout +0']);
  now = 5_001;
  limiter.report('status', 'connection refused');
  t.is(out.at(-1), 'status: connection refused +50', 'the next one says how many were held back');
  now += 100;
  limiter.report('status', 'connection refused');
  t.is(out.length, 4);
});

test('memory stays bounded under many distinct messages', (t) => {
  let now = 0;
  let emitted = 0;
  const limiter = new RepeatLimiter(() => emitted++, 1_000, () => now);
  for (let k = 0; k < 10_000; k++) {
    now += 20;
    limiter.report('pump', `error ${k}`);
  }
  t.is(emitted, 10_000);
  t.true((limiter as unknown as { seen: Map<string, unknown> }).seen.size <= 600);
});

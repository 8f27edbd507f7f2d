import test from 'ava';
import { applyConfigChange, decodeConfigChange, encodeConfigChange } from '../../sidecar/src/core/config.ts';
import { isRaleError } from '../../sidecar/src/errors.ts';

const base = { voters: ['a', 'b', 'c'], learners: ['l'] };

test('add a learner, promote it, remove a voter', (t) => {
  const withD = applyConfigChange(base, { type: 'addLearner', node: 'd' });
  t.deepEqual(withD, { voters: ['a', 'b', 'c'], learners: ['l', 'd'] });
  t.deepEqual(applyConfigChange(withD, { type: 'promote', node: 'd' }), { voters: ['a', 'b', 'c', 'd'], learners: ['l'] });
  t.deepEqual(applyConfigChange(base, { type: 'remove', node: 'a' }), { voters: ['b', 'c'], learners: ['l'] });
  t.deepEqual(applyConfigChange(base, { type: 'remove', node: 'l' }), { voters: ['a', 'b', 'c'], learners: [] });
  t.deepEqual(base, { voters: ['a', 'b', 'c'], learners: ['l'] }, 'the input is not modified');
});

test('invalid changes are refused with INVALID_CONFIG_CHANGE and a reason', (t) => {
  const cases: Array<[Parameters<typeof applyConfigChange>[1], RegExp]> = [
    [{ type: 'addLearner', node: 'a' }, /already a member/],
    [{ type: 'promote', node: 'a' }, /not a learner/],
    [{ type: 'addVoter', node: 'b' }, /already a voter/],
    [{ type: 'remove', node: 'zz' }, /not a member/],
    [{ type: 'addLearner', node: '' }, /non-empty node id/],
  ];
  for (const [change, message] of cases) {
    const err = t.throws(() => applyConfigChange(base, change));
    t.true(isRaleError(err, 'INVALID_CONFIG_CHANGE'));
    t.regex((err as Error).message, message);
  }
  t.throws(() => applyConfigChange({ voters: ['a'], learners: [] }, { type: 'remove', node: 'a' }), { message: /last voter/ });
});

test('config changes round-trip through entry bytes; garbage is refused', (t) => {
  const change = { type: 'addLearner' as const, node: 'n9', context: '127.0.0.1:7000' };
  t.deepEqual(decodeConfigChange(encodeConfigChange(change)), change);
  t.throws(() => decodeConfigChange(new TextEncoder().encode('{"type":1}')), { message: /membership change/ });
});

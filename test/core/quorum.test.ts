import test from 'ava';
import fc from 'fast-check';
import { committedIndex, hasQuorum, majority, tallyVotes } from '../../sidecar/src/core/quorum.ts';

test('majority of n voters', (t) => {
  t.deepEqual([1, 2, 3, 4, 5, 6, 7].map(majority), [1, 2, 2, 3, 3, 4, 4]);
});

test('committedIndex equals the naive definition: the largest index a majority has matched', (t) => {
  fc.assert(
    fc.property(fc.array(fc.nat(50), { minLength: 1, maxLength: 7 }), (matches) => {
      const voters = matches.map((_, k) => `n${k}`);
      const naive = Math.max(0, ...matches.filter((candidate) => matches.filter((m) => m >= candidate).length >= majority(matches.length)));
      return committedIndex(voters, (id) => matches[Number(id.slice(1))] ?? 0) === naive;
    }),
  );
  t.pass();
});

test('committedIndex of no voters is 0', (t) => {
  t.is(committedIndex([], () => 5), 0);
});

test('tallyVotes: won, lost, pending; non-voters do not count', (t) => {
  const voters = ['a', 'b', 'c'];
  t.is(tallyVotes(voters, new Map([['a', true]])), 'pending');
  t.is(tallyVotes(voters, new Map([['a', true], ['b', true]])), 'won');
  t.is(tallyVotes(voters, new Map([['a', true], ['b', false], ['c', false]])), 'lost');
  t.is(tallyVotes(voters, new Map([['a', true], ['x', true], ['y', true]])), 'pending');
});

test('hasQuorum counts voters only', (t) => {
  t.true(hasQuorum(['a', 'b', 'c'], new Set(['a', 'c'])));
  t.false(hasQuorum(['a', 'b', 'c'], new Set(['a', 'learner'])));
  t.false(hasQuorum([], new Set()));
});

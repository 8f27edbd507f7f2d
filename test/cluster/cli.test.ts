/**
 * The `rale` command against a running three-process cluster (with an API
 * token): status, members list, propose and transfer-leader, as a DBA runs
 * them (node bin/rale.js ...), and the errors a typo or a wrong token give.
 */
import { spawn } from 'node:child_process';
import test from 'ava';
import { RALE_BIN } from '../../sidecar/src/process/spawn.ts';
import { waitFor } from './harness.ts';
import { useCluster } from './hooks.ts';

const TOKEN = 'cli-test-api-token-0123456789';
const cluster = useCluster(test, { name: 'cli', size: 3, apiToken: TOKEN });

interface Run {
  code: number | string;
  stdout: string;
  stderr: string;
}

/** Runs `rale <args>` with no RALE_* variables from the machine; kills it after 60 s. */
function rale(...args: string[]): Promise<Run> {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) if (!name.startsWith('RALE_')) env[name] = value;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RALE_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`rale ${args.join(' ')} did not exit within 60 s; stderr so far:\n${stderr}`));
    }, 60_000);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, stdout, stderr });
    });
  });
}

test.serial('status --json and members list describe the running cluster', async (t) => {
  const c = cluster();
  const leader = await c.leader();
  const follower = c.members.find((id) => id !== leader) as string;
  const api = c.node(follower).apiUrl;

  const status = await rale('status', '--api', api, '--token', TOKEN, '--json');
  t.is(status.code, 0, status.stderr);
  const parsed = JSON.parse(status.stdout);
  t.is(parsed.node_id, follower);
  t.is(parsed.leader, leader);
  t.deepEqual([...parsed.voters].sort(), c.members);

  const human = await rale('status', '--api', api, '--token', TOKEN);
  t.is(human.code, 0, human.stderr);
  t.regex(human.stdout, new RegExp(`node ${follower}: follower, term \\d+, leader ${leader}`));

  const list = await rale('members', 'list', '--api', api, '--token', TOKEN);
  t.is(list.code, 0, list.stderr);
  const lines = list.stdout.trim().split('\n');
  t.is(lines.length, 3);
  for (const id of c.members) t.true(lines.some((l) => l.startsWith(`${id}\t`)), `${id} is listed: ${list.stdout}`);
  t.true(lines.some((l) => l.startsWith(`${leader}\tvoter (leader)`)));
});

test.serial('propose applies a command, visible through SQL on every node', async (t) => {
  const c = cluster();
  const api = c.node('node2').apiUrl;
  const run = await rale('propose', '{"op":"set","key":"from-cli","value":{"n":7}}', '--api', api, '--token', TOKEN, '--id', 'cli-once');
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /^applied at index \d+ \(term \d+\) as http:cli-once; result \{"ok":true\}/);
  // The same --id again: applied once, answered with the same proposal.
  const again = await rale('propose', '{"op":"set","key":"from-cli","value":{"n":7}}', '--api', api, '--token', TOKEN, '--id', 'cli-once', '--json');
  t.is(again.code, 0, again.stderr);
  t.is(JSON.parse(again.stdout).proposal_id, 'http:cli-once');
  const state = await c.waitConverged();
  t.deepEqual(state.get('from-cli'), { n: 7 });
});

test.serial('transfer-leader hands leadership to the voter named, asked through a follower', async (t) => {
  const c = cluster();
  const leader = await c.leader();
  const [asked, target] = c.members.filter((id) => id !== leader) as [string, string];
  const run = await rale('transfer-leader', target, '--api', c.node(asked).apiUrl, '--token', TOKEN);
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, new RegExp(`leadership moved from ${leader} to ${target}`));
  t.is(await c.leader(), target);
  const who = await rale('leader', '--api', c.node(leader).apiUrl, '--token', TOKEN);
  t.is(who.code, 0, who.stderr);
  t.regex(who.stdout, new RegExp(`^${target} \\(term \\d+`));
});

test.serial('a bad command, an unknown option and a wrong token fail with messages that say so', async (t) => {
  const c = cluster();
  const api = c.node('node1').apiUrl;
  const badCommand = await rale('stauts', '--api', api);
  t.is(badCommand.code, 2);
  t.regex(badCommand.stderr, /unknown command "stauts"/);
  t.regex(badCommand.stderr, /usage: rale/);

  const badOption = await rale('members', 'list', '--api', api, '--tokn', TOKEN);
  t.is(badOption.code, 2);
  t.regex(badOption.stderr, /unknown option --tokn/);

  const badToken = await rale('status', '--api', api, '--token', 'not-the-token-at-all');
  t.is(badToken.code, 1);
  t.regex(badToken.stderr, /UNAUTHORIZED/);

  // None of it changed the cluster.
  await waitFor('the cluster to still have a leader', () => c.leader());
});

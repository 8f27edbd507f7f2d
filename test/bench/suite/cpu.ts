/**
 * Where the CPU went during a measurement: CPU time of each sidecar, of
 * each PostgreSQL server (the postmaster, its live backends, and the
 * backends that exited, which Linux adds to the postmaster's cutime/cstime
 * once reaped), of the load generator (this process), and of the whole
 * machine (/proc/stat, other engineers' work included). Linux only; elsewhere
 * the figures are empty.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';

let ticksPerSecond = 100;
try {
  ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // keep 100, the usual value
}

/** What to measure: a label and a pid; `tree` also counts the pid's children (a postmaster). */
export interface CpuTarget {
  label: string;
  pid: number;
  tree: boolean;
}

interface Stat {
  ppid: number;
  own: number;
  children: number;
}

export interface CpuSnapshot {
  at: number;
  /** CPU seconds per label. */
  used: Map<string, number>;
  machineBusy: number;
  machineTotal: number;
}

async function readStat(pid: string): Promise<Stat | null> {
  try {
    const text = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // After the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
    return { ppid: Number(f[1]), own: (Number(f[11]) + Number(f[12])) / ticksPerSecond, children: (Number(f[13]) + Number(f[14])) / ticksPerSecond };
  } catch {
    return null;
  }
}

async function machine(): Promise<{ busy: number; total: number }> {
  try {
    const line = (await fs.readFile('/proc/stat', 'utf8')).split('\n')[0] as string;
    const n = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = n.reduce((a, b) => a + b, 0);
    const idle = (n[3] ?? 0) + (n[4] ?? 0); // idle + iowait
    return { busy: (total - idle) / ticksPerSecond, total: total / ticksPerSecond };
  } catch {
    return { busy: 0, total: 0 };
  }
}

export async function cpuSnapshot(targets: CpuTarget[]): Promise<CpuSnapshot> {
  const used = new Map<string, number>();
  const trees = targets.filter((t) => t.tree);
  let all: Array<[string, Stat]> = [];
  if (trees.length > 0) {
    let pids: string[] = [];
    try {
      pids = (await fs.readdir('/proc')).filter((p) => /^\d+$/.test(p));
    } catch {
      pids = [];
    }
    const stats = await Promise.all(pids.map(async (p) => [p, await readStat(p)] as const));
    all = stats.filter((s): s is [string, Stat] => s[1] !== null);
  }
  for (const t of targets) {
    if (t.pid === process.pid) {
      const u = process.cpuUsage();
      used.set(t.label, (u.user + u.system) / 1e6);
      continue;
    }
    const own = await readStat(String(t.pid));
    if (own === null) continue;
    let seconds = own.own;
    if (t.tree) {
      seconds += own.children;
      for (const [, s] of all) if (s.ppid === t.pid) seconds += s.own;
    }
    used.set(t.label, seconds);
  }
  const m = await machine();
  return { at: performance.now(), used, machineBusy: m.busy, machineTotal: m.total };
}

/** Percent of one core per label between two snapshots, and `machine`: percent of all cores busy. */
export function cpuPercent(a: CpuSnapshot, b: CpuSnapshot): Record<string, number> {
  const wall = (b.at - a.at) / 1000;
  const out: Record<string, number> = {};
  if (wall <= 0) return out;
  for (const [label, end] of b.used) {
    const start = a.used.get(label);
    if (start !== undefined) out[label] = (100 * (end - start)) / wall;
  }
  const total = b.machineTotal - a.machineTotal;
  if (total > 0) out.machine = (100 * (b.machineBusy - a.machineBusy)) / total;
  return out;
}

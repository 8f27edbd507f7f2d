/** Samples the resident set size (VmRSS in /proc/<pid>/status) of the sidecar processes. */
import fs from 'node:fs/promises';

export async function rssBytes(pid: number): Promise<number | null> {
  try {
    const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null; // the process is gone (or not Linux)
  }
}

export class RssSampler {
  /** Largest RSS seen per node id, bytes. */
  readonly max = new Map<string, number>();
  samples = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly pids: () => Map<string, number>,
    private readonly everyMs = 250,
  ) {}

  start(): void {
    const tick = async () => {
      for (const [id, pid] of this.pids()) {
        const rss = await rssBytes(pid);
        if (rss !== null) this.max.set(id, Math.max(this.max.get(id) ?? 0, rss));
      }
      this.samples++;
    };
    void tick();
    this.timer = setInterval(() => void tick(), this.everyMs);
  }

  stop(): Map<string, number> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    return this.max;
  }
}

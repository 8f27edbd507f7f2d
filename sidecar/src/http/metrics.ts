/**
 * Metrics in the Prometheus text exposition format (version 0.0.4), written
 * by hand: counters and a histogram kept in memory, gauges read from the
 * node's status at scrape time, so a scrape always shows the current term,
 * role and indexes rather than values sampled earlier.
 */
import type { CoreStatus } from '../core/raft.ts';
import { Role, type NodeId } from '../core/types.ts';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

type Labels = Record<string, string>;

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function series(name: string, labels: Labels, value: number): string {
  const keys = Object.keys(labels);
  const text = keys.length === 0 ? '' : `{${keys.map((k) => `${k}="${escapeLabel(labels[k] as string)}"`).join(',')}}`;
  return `${name}${text} ${formatValue(value)}`;
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function header(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): string[] {
  return [`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} ${type}`];
}

/** A counter with labels; each distinct label set is one series. */
export class Counter {
  private readonly values = new Map<string, { labels: Labels; value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    /** Labelled counters show no series until their first increment (there is no label set to show). */
    readonly labelled = false,
  ) {}

  inc(labels: Labels = {}, by = 1): void {
    const key = JSON.stringify(labels);
    const entry = this.values.get(key);
    if (entry === undefined) this.values.set(key, { labels, value: by });
    else entry.value += by;
  }

  get(labels: Labels = {}): number {
    return this.values.get(JSON.stringify(labels))?.value ?? 0;
  }

  render(): string[] {
    const lines = header(this.name, 'counter', this.help);
    // A counter with no labels is shown at 0 before its first increment, so that rate() works from the start.
    if (this.values.size === 0 && !this.labelled) lines.push(series(this.name, {}, 0));
    for (const { labels, value } of this.values.values()) lines.push(series(this.name, labels, value));
    return lines;
  }
}

/** A histogram with fixed upper bounds (seconds), cumulative as Prometheus wants it. */
export class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly bounds: number[],
  ) {
    this.counts = bounds.map(() => 0);
  }

  observe(value: number): void {
    this.sum += value;
    this.count++;
    for (let k = 0; k < this.bounds.length; k++) if (value <= (this.bounds[k] as number)) this.counts[k] = (this.counts[k] as number) + 1;
  }

  render(): string[] {
    const lines = header(this.name, 'histogram', this.help);
    this.bounds.forEach((le, k) => lines.push(series(`${this.name}_bucket`, { le: String(le) }, this.counts[k] as number)));
    lines.push(series(`${this.name}_bucket`, { le: '+Inf' }, this.count));
    lines.push(series(`${this.name}_sum`, {}, this.sum));
    lines.push(series(`${this.name}_count`, {}, this.count));
    return lines;
  }
}

/** What the metrics read from the node at scrape time. */
export interface MetricsSource {
  readonly id: NodeId;
  status(): CoreStatus;
}

/**
 * The API's metrics. Counters are fed by the API (`proposals`, `requests`)
 * and by the node's events (`observeStatus`, `entryApplied`).
 */
export class ApiMetrics {
  readonly proposalsSubmitted = new Counter('rale_proposals_submitted_total', 'Proposals submitted through this node\'s REST API.');
  readonly proposalsFailed = new Counter(
    'rale_proposals_failed_total',
    'Proposals through this node\'s REST API that did not apply successfully, by error code (APPLY_FAILED: applied, refused by the state machine).',
    true,
  );
  readonly applyLatency = new Histogram(
    'rale_proposal_apply_seconds',
    'Time from a REST proposal being submitted on this node until its entry is applied on this node.',
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );
  readonly entriesApplied = new Counter('rale_entries_applied_total', 'Log entries applied to this node\'s state machine since the process started.');
  readonly elections = new Counter('rale_elections_seen_total', 'Terms this node moved through since the process started (each new term is one election).');
  readonly leaderChanges = new Counter('rale_leader_changes_total', 'Times this node saw a new leader (a different, non-empty leader id).');
  readonly requests = new Counter('rale_http_requests_total', 'HTTP requests answered, by method, route and status code.', true);
  private lastTerm: number | null = null;
  private lastLeader: NodeId | null = null;

  constructor(private readonly source: MetricsSource) {}

  /**
   * Counts elections (term increases) and leader changes. Called on the
   * node's role and leader events and again at every scrape, so a change the
   * events did not report (a term bump while partitioned) is still counted.
   */
  observeStatus(status: Pick<CoreStatus, 'term' | 'leader'>): void {
    if (this.lastTerm !== null && status.term > this.lastTerm) this.elections.inc({}, status.term - this.lastTerm);
    if (this.lastTerm === null || status.term > this.lastTerm) this.lastTerm = status.term;
    if (status.leader !== null && status.leader !== this.lastLeader) this.leaderChanges.inc();
    if (status.leader !== null) this.lastLeader = status.leader;
  }

  render(): string {
    let status: CoreStatus | null = null;
    try {
      status = this.source.status();
      this.observeStatus(status);
    } catch {
      // A stopped node still answers scrapes: counters, and rale_up 0.
    }
    const lines: string[] = [];
    const gauge = (name: string, help: string, values: Array<[Labels, number]>) => {
      lines.push(...header(name, 'gauge', help));
      for (const [labels, value] of values) lines.push(series(name, labels, value));
    };
    gauge('rale_node_info', 'This node\'s id, as a label (the value is always 1).', [[{ node_id: this.source.id }, 1]]);
    gauge('rale_up', 'Whether the Raft node is running (1) or stopped (0).', [[{}, status === null ? 0 : 1]]);
    if (status !== null) {
      const s = status;
      gauge('rale_term', 'Current Raft term of this node.', [[{}, s.term]]);
      gauge(
        'rale_role',
        'Role of this node: 1 for the current role, 0 for the others.',
        Object.values(Role).map((role) => [{ role }, s.role === role ? 1 : 0]),
      );
      gauge('rale_is_leader', 'Whether this node is the leader.', [[{}, s.role === Role.Leader ? 1 : 0]]);
      gauge('rale_commit_index', 'Highest log index known committed.', [[{}, s.commit]]);
      gauge('rale_applied_index', 'Highest log index applied to this node\'s state machine.', [[{}, s.applied]]);
      gauge('rale_last_index', 'Last index in this node\'s log.', [[{}, s.lastIndex]]);
      gauge('rale_first_index', 'First index still in this node\'s log (after its latest snapshot).', [[{}, s.firstIndex]]);
      gauge('rale_voters', 'Voters in this node\'s current configuration.', [[{}, s.config.voters.length]]);
      gauge('rale_learners', 'Learners in this node\'s current configuration.', [[{}, s.config.learners.length]]);
      const followers = Object.entries(s.progress);
      gauge(
        'rale_follower_lag_entries',
        'Leader only: entries in the leader\'s log that the follower does not have yet (last index - match index).',
        followers.map(([id, p]) => [{ follower: id }, Math.max(0, s.lastIndex - p.match)]),
      );
      gauge('rale_follower_match_index', 'Leader only: highest index known replicated on each follower.', followers.map(([id, p]) => [{ follower: id }, p.match]));
      gauge(
        'rale_follower_recently_active',
        'Leader only: whether the follower answered within the last election timeout.',
        followers.map(([id, p]) => [{ follower: id }, p.recentlyActive ? 1 : 0]),
      );
    }
    // The sidecar's own memory, under the names Prometheus client libraries use.
    const memory = process.memoryUsage();
    gauge('process_resident_memory_bytes', 'Resident memory of the sidecar process, in bytes.', [[{}, memory.rss]]);
    gauge('nodejs_heap_size_total_bytes', 'V8 heap size of the sidecar, in bytes.', [[{}, memory.heapTotal]]);
    gauge('nodejs_heap_size_used_bytes', 'V8 heap in use by the sidecar, in bytes.', [[{}, memory.heapUsed]]);
    gauge('nodejs_external_memory_bytes', 'Memory of C++ objects bound to JavaScript objects (buffers), in bytes.', [[{}, memory.external]]);
    for (const metric of [this.proposalsSubmitted, this.proposalsFailed, this.entriesApplied, this.elections, this.leaderChanges, this.requests]) {
      lines.push(...metric.render());
    }
    lines.push(...this.applyLatency.render());
    return lines.join('\n') + '\n';
  }
}

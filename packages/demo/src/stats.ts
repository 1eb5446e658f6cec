import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';

/** Request counts and a latency histogram (microsecond resolution) over some interval. */
export class Window {
  requests = 0;
  errors = 0;
  readonly #hist: RecordableHistogram = createHistogram();

  record(ms: number, ok: boolean): void {
    this.requests++;
    if (!ok) this.errors++;
    this.#hist.record(Math.max(1, Math.round(ms * 1000)));
  }

  /** Latency percentile in milliseconds (0 when nothing was recorded). */
  percentile(p: number): number {
    return this.requests === 0 ? 0 : this.#hist.percentile(p) / 1000;
  }

  reset(): void {
    this.requests = 0;
    this.errors = 0;
    this.#hist.reset();
  }
}

/** The live (last second) and total view of one endpoint or of the client. */
export class Stats {
  readonly live = new Window();
  readonly total = new Window();

  record(ms: number, ok: boolean): void {
    this.live.record(ms, ok);
    this.total.record(ms, ok);
  }
}

/** Formats milliseconds for a table cell: 0.42ms, 12.3ms, 151ms, 1.20s. */
export function formatMs(ms: number): string {
  if (ms === 0) return '-';
  if (ms < 10) return `${ms.toFixed(2)}ms`;
  if (ms < 100) return `${ms.toFixed(1)}ms`;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  return `${(ms / 1000).toFixed(2)}s`;
}

export function formatPercent(ratio: number): string {
  if (ratio >= 1) return '100%';
  return `${(Math.floor(ratio * 10000) / 100).toFixed(2)}%`;
}

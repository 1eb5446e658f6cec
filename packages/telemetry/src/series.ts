import { type Metric, Registry, type RegistryContentType } from 'prom-client';

/** A prom-client registry of either exposition format. */
export type AnyRegistry = Registry<RegistryContentType>;

/**
 * Small metric families that plug into a prom-client `Registry` (they implement the shape the
 * registry reads: `name`, `help`, `type`, `get()`, `reset()`), but whose series are objects the
 * hot path holds on to: recording is an array increment, not a label-hash lookup per request.
 */

export type Labels = Readonly<Record<string, string>>;

interface PromValue {
  metricName?: string;
  labels: Record<string, string | number>;
  value: number;
  exemplar?: { labelSet: Record<string, string>; value: number; timestamp: number } | undefined;
}

interface PromMetricData {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  values: PromValue[];
  aggregator: 'sum' | 'omit';
}

type Collector = () => void;

const SEP = '\u0000';

/** The default of `Family.maxSeries`: the OpenTelemetry SDK's default cardinality limit. */
export const DEFAULT_MAX_SERIES = 2000;

/** The label OpenTelemetry gives the one series that takes what a metric at its limit refused. */
export const OVERFLOW_LABEL = 'otel_metric_overflow';
const OVERFLOW_KEY = '\u0001overflow';

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** `a="x",b="y"` for the label names in order (pre-rendered once per series). */
function renderLabels(names: readonly string[], labels: Labels): string {
  let out = '';
  for (let i = 0; i < names.length; i++) {
    const n = names[i] as string;
    if (i > 0) out += ',';
    out += `${n}="${escapeLabel(labels[n] ?? '')}"`;
  }
  return out;
}

function num(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (!Number.isFinite(v)) return v < 0 ? '-Inf' : '+Inf';
  return `${v}`;
}

abstract class Family<S> {
  /** prom-client's OpenMetrics rendering strips `_total` from counter names in place; see `baseName`. */
  name: string;
  /** The name as registered (with `_total` for counters). */
  readonly fullName: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  readonly aggregator = 'sum' as const;
  abstract readonly type: 'counter' | 'gauge' | 'histogram';
  protected readonly series = new Map<string, S>();
  readonly #collectors: Collector[] = [];
  /**
   * The most series this family keeps. A new label set beyond it is refused: its observations go
   * to one overflow series labelled `otel_metric_overflow="true"` (OpenTelemetry's cardinality
   * limit), and `dropped` counts the refusals.
   */
  maxSeries = DEFAULT_MAX_SERIES;
  /** Label sets refused because the family held `maxSeries` series (each lookup counts). */
  dropped = 0;
  #overflow: S | undefined;

  constructor(name: string, help: string, labelNames: readonly string[]) {
    this.name = name;
    this.fullName = name;
    this.help = help;
    this.labelNames = labelNames;
  }

  /** Renders the family in the Prometheus text format or OpenMetrics (fast path for our registry). */
  abstract render(openMetrics: boolean): string;

  protected header(name: string, type: string): string {
    return `# HELP ${name} ${escapeHelp(this.help)}\n# TYPE ${name} ${type}`;
  }

  protected key(labels: Labels): string {
    let k = '';
    for (let i = 0; i < this.labelNames.length; i++) {
      if (i > 0) k += SEP;
      k += labels[this.labelNames[i] as string] ?? '';
    }
    return k;
  }

  protected abstract create(labels: Labels, labelStr: string): S;

  /**
   * The series for `labels`, created on first use. Keep the result: it is the pre-bound child.
   * Beyond `maxSeries` series, the overflow series (see `isOverflow`).
   */
  child(labels: Labels): S {
    const k = this.key(labels);
    let s = this.series.get(k);
    if (s === undefined) {
      if (this.series.size >= this.maxSeries) {
        this.dropped++;
        return this.#overflowSeries();
      }
      const own: Record<string, string> = {};
      for (const n of this.labelNames) own[n] = labels[n] ?? '';
      s = this.create(own, renderLabels(this.labelNames, own));
      this.series.set(k, s);
    }
    return s;
  }

  #overflowSeries(): S {
    let s = this.#overflow;
    if (s === undefined || !this.series.has(OVERFLOW_KEY)) {
      s = this.create({ [OVERFLOW_LABEL]: 'true' }, `${OVERFLOW_LABEL}="true"`);
      this.#overflow = s;
      // in the map (so it is rendered), under a key no label set produces
      this.series.set(OVERFLOW_KEY, s);
    }
    return s;
  }

  /** True for the series that takes refused label sets' observations (do not cache it by label set). */
  isOverflow(s: S): boolean {
    return s === this.#overflow;
  }

  /** Drops the series for `labels` (an endpoint left, a service closed). */
  remove(labels: Labels): void {
    this.series.delete(this.key(labels));
  }

  /** Drops every series whose labels match all of `match`. */
  removeMatching(match: Labels): void {
    const names = Object.keys(match);
    for (const [k, s] of this.series) {
      const l = (s as { labels: Labels }).labels;
      if (names.every((n) => l[n] === match[n])) this.series.delete(k);
    }
  }

  get size(): number {
    return this.series.size;
  }

  /** Runs `fn` before every scrape (gauges read from the mesh). Returns a remover. */
  addCollector(fn: Collector): () => void {
    this.#collectors.push(fn);
    return () => {
      const i = this.#collectors.indexOf(fn);
      if (i >= 0) this.#collectors.splice(i, 1);
    };
  }

  runCollectors(): void {
    for (const c of this.#collectors) {
      try {
        c();
      } catch {
        // A failing collector must not break the scrape.
      }
    }
  }

  reset(): void {
    this.series.clear();
  }

  abstract get(): Promise<PromMetricData>;
}

export class CounterSeries {
  readonly labels: Labels;
  readonly labelStr: string;
  value = 0;
  constructor(labels: Labels, labelStr: string) {
    this.labels = labels;
    this.labelStr = labelStr;
  }
  inc(by = 1): void {
    this.value += by;
  }
}

export class CounterFamily extends Family<CounterSeries> {
  readonly type = 'counter' as const;
  protected create(labels: Labels, labelStr: string): CounterSeries {
    return new CounterSeries(labels, labelStr);
  }
  render(openMetrics: boolean): string {
    this.runCollectors();
    const base = openMetrics ? this.fullName.replace(/_total$/, '') : this.fullName;
    const sample = openMetrics ? `${base}_total` : base;
    let out = this.header(base, 'counter');
    for (const s of this.series.values())
      out += `\n${sample}${s.labelStr ? `{${s.labelStr}}` : ''} ${num(s.value)}`;
    return out;
  }
  async get(): Promise<PromMetricData> {
    this.runCollectors();
    const values: PromValue[] = [];
    for (const s of this.series.values()) values.push({ labels: { ...s.labels }, value: s.value });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

export class GaugeSeries {
  readonly labels: Labels;
  readonly labelStr: string;
  value = 0;
  constructor(labels: Labels, labelStr: string) {
    this.labels = labels;
    this.labelStr = labelStr;
  }
  set(v: number): void {
    this.value = v;
  }
}

export class GaugeFamily extends Family<GaugeSeries> {
  readonly type = 'gauge' as const;
  protected create(labels: Labels, labelStr: string): GaugeSeries {
    return new GaugeSeries(labels, labelStr);
  }
  render(_openMetrics: boolean): string {
    this.runCollectors();
    let out = this.header(this.fullName, 'gauge');
    for (const s of this.series.values())
      out += `\n${this.fullName}${s.labelStr ? `{${s.labelStr}}` : ''} ${num(s.value)}`;
    return out;
  }
  /** Sets a gauge by labels (scrape-time collectors). */
  set(labels: Labels, value: number): void {
    this.child(labels).value = value;
  }
  async get(): Promise<PromMetricData> {
    this.runCollectors();
    const values: PromValue[] = [];
    for (const s of this.series.values()) values.push({ labels: { ...s.labels }, value: s.value });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

interface Exemplar {
  traceId: string;
  spanId: string;
  value: number;
  timestamp: number;
}

export class HistogramSeries {
  readonly labels: Labels;
  readonly labelStr: string;
  /**
   * The buckets' upper bounds (the family's copy): the configured list is frozen, and on Node 20
   * an element read of a frozen array from optimized code is a generic keyed-load IC call (~70–90
   * instructions each, one or more per observation); a typed array's is a plain load.
   */
  readonly #bounds: Float64Array;
  /** Per-bucket (non-cumulative) counts; the last slot is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  /** Rendered sample prefixes (`name_bucket{…,le="…"} `, then `_sum`, `_count`), built at first scrape. */
  rendered: string[] | undefined;
  /** The series' rendered lines at the last scrape, and the count they were rendered at. */
  block: string | undefined;
  blockCount = -1;
  blockOpenMetrics = false;
  /** Latest exemplar per bucket (only when exemplars are enabled and a trace id was given). */
  exemplars: Array<Exemplar | undefined> | undefined;

  constructor(labels: Labels, labelStr: string, bounds: Float64Array) {
    this.labels = labels;
    this.labelStr = labelStr;
    this.#bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  #bucket(v: number): number {
    const b = this.#bounds;
    let i = 0;
    while (i < b.length && v > (b[i] as number)) i++;
    return i;
  }

  observe(v: number): void {
    const i = this.#bucket(v);
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += v;
    this.count++;
  }

  /** Observes `v` and keeps (traceId, spanId) as the bucket's exemplar. */
  observeWithExemplar(v: number, traceId: string, spanId: string): void {
    const i = this.#bucket(v);
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += v;
    this.count++;
    this.exemplars ??= [];
    this.exemplars[i] = { traceId, spanId, value: v, timestamp: Date.now() / 1000 };
  }
}

export class HistogramFamily extends Family<HistogramSeries> {
  readonly type = 'histogram' as const;
  readonly bounds: readonly number[];
  /** `bounds` as its series read them (see `HistogramSeries`). */
  readonly #fast: Float64Array;
  readonly #le: readonly string[];
  constructor(name: string, help: string, labelNames: readonly string[], bounds: readonly number[]) {
    super(name, help, labelNames);
    this.bounds = bounds;
    this.#fast = Float64Array.from(bounds);
    this.#le = [...bounds.map((b) => `le="${num(b)}"`), 'le="+Inf"'];
  }
  protected create(labels: Labels, labelStr: string): HistogramSeries {
    return new HistogramSeries(labels, labelStr, this.#fast);
  }
  render(openMetrics: boolean): string {
    this.runCollectors();
    const name = this.fullName;
    let out = this.header(name, 'histogram');
    const le = this.#le;
    for (const s of this.series.values()) {
      // A series that saw no observation since the last scrape renders as it did then.
      if (s.block !== undefined && s.blockCount === s.count && s.blockOpenMetrics === openMetrics) {
        out += s.block;
        continue;
      }
      // Sample names with labels are rendered once per series and reused by every scrape.
      let pre = s.rendered;
      if (pre === undefined) {
        const p = s.labelStr ? `\n${name}_bucket{${s.labelStr},` : `\n${name}_bucket{`;
        const l = s.labelStr ? `{${s.labelStr}}` : '';
        pre = [...le.map((x) => `${p}${x}} `), `\n${name}_sum${l} `, `\n${name}_count${l} `];
        s.rendered = pre;
      }
      let block = '';
      let acc = 0;
      for (let i = 0; i < le.length; i++) {
        acc += s.counts[i] as number;
        block += (pre[i] as string) + acc;
        const ex = openMetrics ? s.exemplars?.[i] : undefined;
        if (ex !== undefined)
          block += ` # {trace_id="${ex.traceId}",span_id="${ex.spanId}"} ${num(ex.value)} ${ex.timestamp}`;
      }
      block += (pre[le.length] as string) + num(s.sum) + (pre[le.length + 1] as string) + s.count;
      s.block = block;
      s.blockCount = s.count;
      s.blockOpenMetrics = openMetrics;
      out += block;
    }
    return out;
  }
  async get(): Promise<PromMetricData> {
    this.runCollectors();
    const values: PromValue[] = [];
    const bucket = `${this.name}_bucket`;
    const bounds = this.bounds;
    for (const s of this.series.values()) {
      let acc = 0;
      for (let i = 0; i <= bounds.length; i++) {
        acc += s.counts[i] as number;
        const ex = s.exemplars?.[i];
        values.push({
          metricName: bucket,
          labels: { ...s.labels, le: i < bounds.length ? (bounds[i] as number) : '+Inf' },
          value: acc,
          exemplar:
            ex === undefined
              ? undefined
              : {
                  labelSet: { trace_id: ex.traceId, span_id: ex.spanId },
                  value: ex.value,
                  timestamp: ex.timestamp,
                },
        });
      }
      values.push({ metricName: `${this.name}_sum`, labels: { ...s.labels }, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels: { ...s.labels }, value: s.count });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

type AnyFamily = CounterFamily | GaugeFamily | HistogramFamily;

/**
 * Registers `family` in `registry`, or returns the family already registered there under the same
 * name and type (registering twice is safe: two meshes, or a re-created mesh, share the series).
 * Throws when the name is taken by a different kind of metric.
 */
export function registerFamily<F extends AnyFamily>(registry: AnyRegistry, family: F): F {
  const existing = registry.getSingleMetric(family.name) as unknown;
  if (existing !== undefined) {
    if (
      existing instanceof Family &&
      existing.type === family.type &&
      existing.labelNames.join(',') === family.labelNames.join(',')
    ) {
      return existing as F;
    }
    throw new Error(
      `metric "${family.name}" is already registered in this registry with a different type or labels`,
    );
  }
  registry.registerMetric(family as unknown as Metric);
  return family;
}

/**
 * The registry meshlet creates when the caller brings none: a plain prom-client `Registry` whose
 * rendering of meshlet's own families skips the generic per-sample label formatting (label strings
 * are rendered once per series). Other metrics registered in it render as usual.
 */
export class MeshRegistry extends Registry<RegistryContentType> {
  getMetricsAsString(metric: unknown): Promise<string> {
    const defaults = (this as unknown as { _defaultLabels?: Record<string, string> })._defaultLabels;
    if (metric instanceof Family && (defaults === undefined || Object.keys(defaults).length === 0)) {
      return Promise.resolve(metric.render(this.contentType === Registry.OPENMETRICS_CONTENT_TYPE));
    }
    const base = Registry.prototype as unknown as { getMetricsAsString(m: unknown): Promise<string> };
    return base.getMetricsAsString.call(this, metric);
  }

  /** Same output as prom-client's, rendering meshlet's families synchronously in one pass. */
  override async metrics(): Promise<string> {
    const openMetrics = this.contentType === Registry.OPENMETRICS_CONTENT_TYPE;
    const defaults = (this as unknown as { _defaultLabels?: Record<string, string> })._defaultLabels;
    if (defaults !== undefined && Object.keys(defaults).length > 0) return super.metrics();
    const parts: Array<string | Promise<string>> = [];
    let pending = false;
    for (const m of this.getMetricsAsArray() as unknown[]) {
      if (m instanceof Family) {
        parts.push(m.render(openMetrics));
      } else {
        pending = true;
        if (openMetrics && (m as { type?: string }).type === 'counter') {
          const c = m as { name: string };
          c.name = c.name.replace(/_total$/, '');
        }
        parts.push(this.getMetricsAsString(m));
      }
    }
    const done = pending ? await Promise.all(parts) : (parts as string[]);
    return openMetrics ? `${done.join('\n')}\n# EOF\n` : `${done.join('\n\n')}\n`;
  }
}

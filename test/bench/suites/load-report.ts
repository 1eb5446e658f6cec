import { performance } from 'node:perf_hooks';
import {
  decodeOrcaLoadReport,
  EndpointState,
  LoadSampler,
  makeEndpoint,
  type OrcaHeaderFormat,
  parseOrcaHeader,
  processLoadSources,
  readEndpointReport,
  readOrcaReport,
} from '../../../packages/core/src/index.js';
import type { BenchSuite, BenchSuiteResult } from '../lib.js';

/**
 * The costs of load reports (issue 15): what producing the report costs a server (once per sample
 * interval, on a timer), how many bytes it adds to every response in each header form, and what
 * reading it costs a client per response (parse of the header value; decode of a gRPC trailer).
 * Best of several rounds; CPU-bound microbenchmarks, so the shared machine's load inflates the
 * absolute numbers but not the comparison between forms.
 */
const FORMATS: readonly OrcaHeaderFormat[] = ['text', 'json', 'binary'];

function best(rounds: number, iters: number, fn: () => void): number {
  let min = Number.POSITIVE_INFINITY;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    for (let i = 0; i < iters; i++) fn();
    min = Math.min(min, ((performance.now() - t0) * 1e6) / iters);
  }
  return Math.round(min);
}

const suite: BenchSuite = {
  name: 'load-report',
  inQuick: true,
  async run({ quick }): Promise<BenchSuiteResult> {
    const rounds = quick ? 2 : 7;
    const sampleIters = quick ? 100 : 1000;
    const parseIters = quick ? 2000 : 20_000;
    // A typical server report: the sampler's own metrics plus two application metrics.
    const sources = processLoadSources(10);
    const samplers = Object.fromEntries(
      FORMATS.map((f) => {
        const s = new LoadSampler({ format: f, sources });
        s.set('queue_depth', 12);
        s.set('cache_hit_ratio', 0.93);
        for (let i = 0; i < 40; i++) s.requestStarted();
        for (let i = 0; i < 37; i++) s.requestFinished(i === 0);
        return [f, s];
      }),
    ) as Record<OrcaHeaderFormat, LoadSampler>;
    sources.start?.();
    const sampleNs: Record<string, number> = {};
    const headerBytes: Record<string, number> = {};
    const parseNs: Record<string, number> = {};
    let sink = 0;
    try {
      await new Promise((r) => setTimeout(r, 20));
      for (const f of FORMATS) {
        const s = samplers[f];
        // Each sample needs time to have passed; a busy loop of ~2 µs per iteration suffices.
        sampleNs[f] = best(rounds, sampleIters, () => {
          s.requestStarted();
          s.requestFinished();
          sink += s.sample().header.length;
        });
        const header = s.current.header;
        headerBytes[f] = Buffer.byteLength(`endpoint-load-metrics: ${header}\r\n`);
        parseNs[f] = best(rounds, parseIters, () => {
          const r = parseOrcaHeader(header);
          if (r.ok) sink += r.report.rpsFractional;
        });
      }
      const s = samplers.text;
      const bin = s.current.binary;
      const binB64 = bin.toString('base64');
      headerBytes['binary trailer (gRPC endpoint-load-metrics-bin)'] = Buffer.byteLength(
        `endpoint-load-metrics-bin: ${binB64}\r\n`,
      );
      parseNs['binary trailer (decoded bytes)'] = best(rounds, parseIters, () => {
        const r = decodeOrcaLoadReport(bin);
        if (r.ok) sink += r.report.rpsFractional;
      });
      const response = [
        'content-type',
        'application/json',
        'content-length',
        '29',
        'endpoint-load-metrics',
        s.current.header,
      ];
      parseNs['readOrcaReport, undici raw headers (text)'] = best(rounds, parseIters, () => {
        const r = readOrcaReport(response);
        if (r?.ok) sink += r.report.rpsFractional;
      });
      // What a transport pays per response: the server re-sends one value per interval, so the
      // endpoint's cache turns most parses into a comparison (a fresh string per response, as a
      // socket read makes).
      const ep = new EndpointState('bench', makeEndpoint({ address: '127.0.0.1', port: 1 }), 0);
      const copies = Array.from({ length: 64 }, (_, i) => [
        ...response.slice(0, 5),
        `${s.current.header} `.slice(0, -1 - (i & 0)),
      ]);
      let c = 0;
      parseNs['readEndpointReport, same value as the previous response'] = best(rounds, parseIters, () => {
        const r = readEndpointReport(ep, copies[c++ & 63] as string[]);
        if (r?.ok) sink += r.report.rpsFractional;
      });
      parseNs['readOrcaReport, no report in the response'] = best(rounds, parseIters, () => {
        if (readOrcaReport(response.slice(0, 4)) === undefined) sink++;
      });
    } finally {
      sources.stop?.();
    }
    if (sink === -1) throw new Error('unreachable');
    const report = samplers.text.current.header;
    return {
      results: { sampleNs, headerBytes, parseNs, exampleHeader: report },
      summary: [
        `report production (one sample: counters, ELU, CPU, RSS, delay histogram, report + its encodings): ${FORMATS.map((f) => `${f} ${sampleNs[f]} ns`).join(', ')} — once per interval (1 s by default), not per request`,
        `per-response bytes: ${Object.entries(headerBytes)
          .map(([k, v]) => `${k} ${v} B`)
          .join(', ')}`,
        `client cost per response: ${Object.entries(parseNs)
          .map(([k, v]) => `${k} ${v} ns`)
          .join(', ')}`,
        `example: endpoint-load-metrics: ${report}`,
      ],
    };
  },
};

export default suite;

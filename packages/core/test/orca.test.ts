import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeOrcaLoadReport,
  EMPTY_ORCA_REPORT,
  encodeOrcaLoadReport,
  formatOrcaBin,
  formatOrcaHeader,
  formatOrcaJson,
  formatOrcaText,
  type OrcaLoadReport,
  type OrcaParseResult,
  orcaLoadReport,
  parseOrcaBin,
  parseOrcaHeader,
  readEndpointReport,
  readEndpointReportBytes,
  readOrcaReport,
} from '../src/index.js';
import { states } from './lb-helpers.js';

/**
 * grpc-js's own ORCA encoder (the per-call recorder its servers use; protobufjs through
 * @grpc/proto-loader underneath) and decoder, as the reference for the wire form.
 */
const require = createRequire(import.meta.url);
interface GrpcRecorder {
  recordCPUUtilizationMetric(v: number): void;
  recordMemoryUtilizationMetric(v: number): void;
  recordApplicationUtilizationMetric(v: number): void;
  recordQpsMetric(v: number): void;
  recordEpsMetric(v: number): void;
  recordRequestCostMetric(name: string, v: number): void;
  recordUtilizationMetric(name: string, v: number): void;
  recordNamedMetric(name: string, v: number): void;
  serialize(): Buffer;
}
const grpcOrca = require('@grpc/grpc-js/build/src/orca.js') as {
  PerRequestMetricRecorder: new () => GrpcRecorder;
};

function grpcEncode(r: OrcaLoadReport): Buffer {
  const m = new grpcOrca.PerRequestMetricRecorder();
  // grpc-js writes every field it was given; meshlet's canonical form omits zero scalars, so only
  // non-zero ones are given (proto3 treats both forms as the same message).
  if (r.cpuUtilization !== 0) m.recordCPUUtilizationMetric(r.cpuUtilization);
  if (r.memUtilization !== 0) m.recordMemoryUtilizationMetric(r.memUtilization);
  if (r.applicationUtilization !== 0) m.recordApplicationUtilizationMetric(r.applicationUtilization);
  if (r.rpsFractional !== 0) m.recordQpsMetric(r.rpsFractional);
  if (r.eps !== 0) m.recordEpsMetric(r.eps);
  for (const [k, v] of Object.entries(r.requestCost)) m.recordRequestCostMetric(k, v);
  for (const [k, v] of Object.entries(r.utilization)) m.recordUtilizationMetric(k, v);
  for (const [k, v] of Object.entries(r.namedMetrics)) m.recordNamedMetric(k, v);
  return m.serialize();
}

interface GrpcDecoded {
  cpu_utilization: number;
  mem_utilization: number;
  application_utilization: number;
  rps_fractional: number;
  eps: number;
  request_cost: Record<string, number>;
  utilization: Record<string, number>;
  named_metrics: Record<string, number>;
}
const protoLoader = require('@grpc/proto-loader') as typeof import('@grpc/proto-loader');
const grpcProtoDir = `${require.resolve('@grpc/grpc-js/package.json').replace(/package\.json$/, '')}proto`;
const orcaType = protoLoader.loadSync('xds/data/orca/v3/orca_load_report.proto', {
  keepCase: true,
  defaults: true,
  includeDirs: [`${grpcProtoDir}/xds`, `${grpcProtoDir}/protoc-gen-validate`],
})['xds.data.orca.v3.OrcaLoadReport'] as unknown as {
  serialize(v: object): Buffer;
  deserialize(b: Buffer): GrpcDecoded;
};

/** The same message through the loaded proto type (what the recorder calls, minus its per-call proto load). */
function protoEncode(r: OrcaLoadReport): Buffer {
  const msg: Record<string, unknown> = {
    request_cost: { ...r.requestCost },
    utilization: { ...r.utilization },
    named_metrics: { ...r.namedMetrics },
  };
  if (r.cpuUtilization !== 0) msg.cpu_utilization = r.cpuUtilization;
  if (r.memUtilization !== 0) msg.mem_utilization = r.memUtilization;
  if (r.applicationUtilization !== 0) msg.application_utilization = r.applicationUtilization;
  if (r.rpsFractional !== 0) msg.rps_fractional = r.rpsFractional;
  if (r.eps !== 0) msg.eps = r.eps;
  return orcaType.serialize(msg);
}

function ok(result: OrcaParseResult | undefined): OrcaLoadReport {
  if (result === undefined) throw new Error('no report');
  if (!result.ok) throw new Error(`rejected: ${result.error}`);
  return result.report;
}
function rejected(result: OrcaParseResult | undefined): string {
  if (result === undefined) throw new Error('no report');
  if (result.ok) throw new Error(`accepted: ${JSON.stringify(result.report)}`);
  return result.error;
}
const plain = (r: OrcaLoadReport) => JSON.parse(JSON.stringify(r));

/** The ORCA specification's example (cncf/xds orca/orca-spec.md): cpu 0.1, rps 2, foo 0.1, bar 0.2. */
const SPEC_BIN = 'CZqZmZmZmbk/MQAAAAAAAABAQg4KA2ZvbxGamZmZmZm5P0IOCgNiYXIRmpmZmZmZyT8=';
const SPEC = orcaLoadReport({ cpuUtilization: 0.1, rpsFractional: 2, namedMetrics: { foo: 0.1, bar: 0.2 } });

/** Envoy's example report (test/common/orca/orca_parser_test.cc). */
const ENVOY = orcaLoadReport({
  cpuUtilization: 0.7,
  applicationUtilization: 0.8,
  memUtilization: 0.9,
  eps: 2,
  rpsFractional: 1000,
  namedMetrics: { foo: 123, bar: 0.2 },
});

const FULL = orcaLoadReport({
  cpuUtilization: 1.7,
  memUtilization: 0.42,
  applicationUtilization: 0.93,
  rpsFractional: 1234.5,
  eps: 0.25,
  requestCost: { db_rows: 3487, cache: -2 },
  utilization: { queue: 0.5, pool: 1 },
  namedMetrics: { in_flight: 12, 'év-loop': 3.5 },
});

describe('ORCA protobuf codec against grpc-js', () => {
  it('encodes the specification example byte for byte', () => {
    expect(encodeOrcaLoadReport(SPEC).toString('base64')).toBe(SPEC_BIN);
    expect(grpcEncode(SPEC).toString('base64')).toBe(SPEC_BIN);
  });

  it('writes the bytes grpc-js writes for full, unicode and empty reports', () => {
    for (const r of [FULL, ENVOY, EMPTY_ORCA_REPORT]) {
      expect(encodeOrcaLoadReport(r)).toEqual(grpcEncode(r));
      expect(protoEncode(r)).toEqual(grpcEncode(r));
    }
    expect(encodeOrcaLoadReport(EMPTY_ORCA_REPORT).length).toBe(0);
  });

  it('decodes what grpc-js encodes, and grpc-js decodes what it encodes', () => {
    expect(plain(ok(decodeOrcaLoadReport(grpcEncode(FULL))))).toEqual(plain(FULL));
    const back = orcaType.deserialize(encodeOrcaLoadReport(FULL));
    expect(back.cpu_utilization).toBe(1.7);
    expect(back.application_utilization).toBe(0.93);
    expect(back.request_cost).toEqual({ db_rows: 3487, cache: -2 });
    expect(back.named_metrics['év-loop']).toBe(3.5);
  });

  const name = fc.string({ minLength: 1, maxLength: 20, unit: 'grapheme' });
  const unit = fc.double({ min: 0, max: 1, noNaN: true });
  const nonNeg = fc.double({ min: 0, max: 1e9, noNaN: true });
  const finite = fc.double({ min: -1e12, max: 1e12, noNaN: true });
  const arbReport = fc
    .record({
      cpuUtilization: nonNeg,
      memUtilization: unit,
      applicationUtilization: nonNeg,
      rpsFractional: nonNeg,
      eps: nonNeg,
      requestCost: fc.dictionary(name, finite, { maxKeys: 4 }),
      utilization: fc.dictionary(name, unit, { maxKeys: 4 }),
      namedMetrics: fc.dictionary(name, finite, { maxKeys: 4 }),
    })
    .map((init) => orcaLoadReport(init));

  it('matches grpc-js on random reports and round-trips them (property)', () => {
    // grpc-js's recorder loads the .proto on every serialize (tens of ms), so the property runs
    // through the same proto-loader type it uses; the recorder itself is checked on fixed reports.
    fc.assert(
      fc.property(arbReport, (r) => {
        const bytes = encodeOrcaLoadReport(r);
        expect(bytes).toEqual(protoEncode(r));
        expect(plain(ok(decodeOrcaLoadReport(bytes)))).toEqual(plain(r));
      }),
      { numRuns: 100 },
    );
  });

  it('never throws on arbitrary bytes (fuzz)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const r = decodeOrcaLoadReport(bytes);
        expect(typeof r.ok).toBe('boolean');
      }),
      { numRuns: 2000 },
    );
  });
});

/** Hand-written protobuf pieces for the decoder's edge cases. */
function dbl(field: number, v: number): number[] {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(v);
  return [(field << 3) | 1, ...b];
}

describe('ORCA protobuf decoder', () => {
  it('skips the deprecated rps and unknown fields of every wire type; later scalars win', () => {
    const bytes = Uint8Array.from([
      ...dbl(1, 0.5),
      0x18, // field 3 (rps), varint 300
      0xac,
      0x02,
      0x50, // field 10, varint 1
      0x01,
      0x5d, // field 11, fixed32
      1,
      2,
      3,
      4,
      0x62, // field 12, 2 bytes
      2,
      0xff,
      0xff,
      ...dbl(1, 0.25),
      ...dbl(9, 0.75),
    ]);
    const r = ok(decodeOrcaLoadReport(bytes));
    expect(r.cpuUtilization).toBe(0.25);
    expect(r.applicationUtilization).toBe(0.75);
  });

  it('rejects every truncation of a valid report without throwing', () => {
    const bytes = encodeOrcaLoadReport(FULL);
    for (let n = 1; n < bytes.length; n++) {
      const r = decodeOrcaLoadReport(bytes.subarray(0, n));
      // A cut exactly between two fields is a valid (shorter) report; any other cut is an error.
      if (r.ok) expect(Object.keys(r.report).length).toBe(8);
      else expect(r.error).toMatch(/truncated|malformed/);
    }
    expect(rejected(decodeOrcaLoadReport(bytes.subarray(0, 5)))).toMatch(/truncated/);
  });

  it('rejects wrong wire types, groups, bad UTF-8 and values the proto forbids', () => {
    expect(rejected(decodeOrcaLoadReport(Uint8Array.from([0x08, 0x01])))).toMatch(/field 1 has wire type 0/);
    expect(rejected(decodeOrcaLoadReport(Uint8Array.from([0x22, 0x00, 0x0b])))).toMatch(/field 1|malformed/);
    expect(rejected(decodeOrcaLoadReport(Uint8Array.from([0x5b, 0x5c])))).toMatch(/malformed field 11/);
    expect(rejected(decodeOrcaLoadReport(Uint8Array.from([0x00])))).toMatch(/field number 0/);
    // named_metrics entry with key 0xff (not UTF-8).
    expect(rejected(decodeOrcaLoadReport(Uint8Array.from([0x42, 0x03, 0x0a, 0x01, 0xff])))).toMatch(/UTF-8/);
    expect(rejected(decodeOrcaLoadReport(Uint8Array.from(dbl(1, -0.5))))).toMatch(
      /cpu_utilization must be >= 0/,
    );
    expect(rejected(decodeOrcaLoadReport(Uint8Array.from(dbl(2, 1.5))))).toMatch(
      /mem_utilization must be <= 1/,
    );
    expect(rejected(decodeOrcaLoadReport(Uint8Array.from(dbl(7, Number.NaN))))).toMatch(
      /eps must be a finite/,
    );
    expect(rejected(decodeOrcaLoadReport(Uint8Array.from(dbl(6, Number.POSITIVE_INFINITY))))).toMatch(
      /finite/,
    );
    const util = encodeOrcaLoadReport(orcaLoadReport({ namedMetrics: { q: 3 } }));
    util[0] = (5 << 3) | 2; // the same entry as a `utilization` entry, where 3 is out of 0..1
    expect(rejected(decodeOrcaLoadReport(util))).toMatch(/utilization.q must be within 0..1/);
  });

  it('enforces the size and entry limits', () => {
    const many = orcaLoadReport(
      { namedMetrics: Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`m${i}`, i])) },
      { maxHeaderBytes: 4096, maxEntries: 10, maxNameLength: 128 },
    );
    const bytes = encodeOrcaLoadReport(many);
    expect(ok(decodeOrcaLoadReport(bytes, { maxHeaderBytes: 4096, maxEntries: 10, maxNameLength: 8 })));
    expect(
      rejected(decodeOrcaLoadReport(bytes, { maxHeaderBytes: 4096, maxEntries: 9, maxNameLength: 8 })),
    ).toMatch(/too many metrics/);
    expect(
      rejected(decodeOrcaLoadReport(bytes, { maxHeaderBytes: 20, maxEntries: 64, maxNameLength: 8 })),
    ).toMatch(/exceeds the limit of 20/);
    expect(
      rejected(decodeOrcaLoadReport(bytes, { maxHeaderBytes: 4096, maxEntries: 64, maxNameLength: 1 })),
    ).toMatch(/longer than 1 characters/);
  });

  it('keeps a metric named __proto__ as an ordinary key', () => {
    const r = ok(
      decodeOrcaLoadReport(
        encodeOrcaLoadReport(orcaLoadReport({ namedMetrics: new Map([['__proto__', 7]]) })),
      ),
    );
    expect(Object.getPrototypeOf(r.namedMetrics)).toBeNull();
    expect(Object.entries(r.namedMetrics)).toEqual([['__proto__', 7]]);
    expect(Object.prototype).not.toHaveProperty('7');
  });
});

describe('endpoint-load-metrics header (Envoy formats)', () => {
  it('parses the TEXT form of the ORCA specification and of Envoy’s tests', () => {
    const spec = ok(
      parseOrcaHeader(
        'TEXT cpu_utilization=0.3, mem_utilization=0.8, rps_fractional=10.0, eps=1, named_metrics.custom_metric_util=0.4',
      ),
    );
    expect(plain(spec)).toEqual(
      plain(
        orcaLoadReport({
          cpuUtilization: 0.3,
          memUtilization: 0.8,
          rpsFractional: 10,
          eps: 1,
          namedMetrics: { custom_metric_util: 0.4 },
        }),
      ),
    );
    // Envoy's fuzz corpus `valid_text`, which also carries a `utilization.` entry.
    const corpus = ok(
      parseOrcaHeader(
        'TEXT cpu_utilization=0.7,application_utilization=0.8,mem_utilization=0.9,rps_fractional=1000,eps=2,named_metrics.foo=123,named_metrics.bar=0.2,utilization.total=0.5',
      ),
    );
    expect(plain(corpus)).toEqual(plain({ ...ENVOY, utilization: { total: 0.5 } }));
    expect(
      ok(parseOrcaHeader('TEXT request_cost.db.rows=12, ,named_metrics.a.b=-1e3')).requestCost['db.rows'],
    ).toBe(12);
  });

  it('rejects bad TEXT the way Envoy does, naming the problem', () => {
    const cases: Array<[string, RegExp]> = [
      ['TEXT cpu_utilization=0.7,cpu_utilization=0.8', /duplicate metric cpu_utilization/],
      [
        'TEXT named_metrics.foo=1,named_metrics.dup=1,named_metrics.dup=2',
        /duplicate metric named_metrics.dup/,
      ],
      ['TEXT cpu_utilization=0.7,unsupported_metric=0.8', /unsupported metric name unsupported_metric/],
      ['TEXT not-a-list-of-key-value-pairs', /is not name=value/],
      ['TEXT cpu_utilization="0.7"', /not a finite number/],
      ['TEXT cpu_utilization=nan', /not a finite number/],
      ['TEXT cpu_utilization=inf', /not a finite number/],
      ['TEXT cpu_utilization=1e999', /not a finite number/],
      ['TEXT cpu_utilization=0x10', /not a finite number/],
      ['TEXT cpu_utilization=', /empty value/],
      ['TEXT =1', /empty metric name/],
      ['TEXT named_metrics.=123', /empty metric name/],
      ['TEXT cpu_utilization:0.7', /is not name=value/],
      ['TEXT cpu_utilization=-1', /cpu_utilization must be >= 0/],
      ['TEXT utilization.x=2', /utilization.x must be within 0..1/],
      ['BAD random-value', /unsupported ORCA header format: "BAD"/],
      ['BADBAD random-value', /unsupported ORCA header format: "BADBA"/],
      ['', /unsupported ORCA header format: ""/],
      ['text cpu_utilization=1', /unsupported ORCA header format/],
      ['cpu_utilization=0.7', /unsupported ORCA header format/],
    ];
    for (const [value, error] of cases) expect(rejected(parseOrcaHeader(value)), value).toMatch(error);
  });

  it('parses the JSON form (proto names, JSON names, numeric strings, null) and rejects unknown fields', () => {
    const envoy = ok(
      parseOrcaHeader(
        'JSON {"cpu_utilization": 0.7, "application_utilization": 0.8, "mem_utilization": 0.9, "rps_fractional": 1000, "eps": 2, "named_metrics": {"foo": 123,"bar": 0.2}}',
      ),
    );
    expect(plain(envoy)).toEqual(plain(ENVOY));
    const camel = ok(
      parseOrcaHeader('JSON {"cpuUtilization":"0.5","namedMetrics":{"q":"3"},"eps":null,"rps":"7"}'),
    );
    expect([camel.cpuUtilization, camel.namedMetrics.q, camel.eps]).toEqual([0.5, 3, 0]);
    const cases: Array<[string, RegExp]> = [
      ['JSON not-a-valid-json-string', /invalid JSON/],
      ['JSON {"cpu_utilization": "0.7"', /invalid JSON/],
      ['JSON {"cpu_utilization": 0.7, "unknown_field": 2}', /unknown field unknown_field/],
      ['JSON {"cpu_utilization": 0.7, "cpuUtilization": 0.7}', /given twice/],
      ['JSON [1]', /must be an object/],
      ['JSON {"eps": true}', /eps is not a finite number/],
      ['JSON {"eps": "NaN"}', /eps is not a finite number/],
      ['JSON {"named_metrics": [1]}', /must be an object of numbers/],
      ['JSON {"named_metrics": {"a": "x"}}', /named_metrics.a is not a finite number/],
      ['JSON {"rps": 1.5}', /rps must be a whole number/],
      ['JSON {"mem_utilization": 2}', /mem_utilization must be <= 1/],
    ];
    for (const [value, error] of cases) expect(rejected(parseOrcaHeader(value)), value).toMatch(error);
  });

  it('parses BIN and the -bin header, and rejects bad base64', () => {
    expect(plain(ok(parseOrcaHeader(`BIN ${SPEC_BIN}`)))).toEqual(plain(SPEC));
    expect(plain(ok(parseOrcaBin(SPEC_BIN.replace(/=+$/, ''))))).toEqual(plain(SPEC)); // unpadded, as gRPC allows
    expect(rejected(parseOrcaBin(''))).toMatch(/empty/);
    expect(rejected(parseOrcaBin('not-a-valid-binary-proto'))).toMatch(/not valid base64/);
    expect(rejected(parseOrcaBin('CZqZm'))).toMatch(/not valid base64/);
    expect(rejected(parseOrcaBin('CZqZm==='))).toMatch(/not valid base64/);
    // Base64 of half the bytes: a truncated message.
    const half = Buffer.from(SPEC_BIN, 'base64').subarray(0, 20).toString('base64');
    expect(rejected(parseOrcaBin(half))).toMatch(/truncated/);
  });

  it('reads a response’s report from every header form, with Envoy’s precedence', () => {
    const text = formatOrcaText(ENVOY);
    expect(readOrcaReport({ 'content-type': 'text/plain' })).toBeUndefined();
    expect(readOrcaReport(undefined)).toBeUndefined();
    expect(plain(ok(readOrcaReport({ 'endpoint-load-metrics': text })))).toEqual(plain(ENVOY));
    expect(plain(ok(readOrcaReport({ 'Endpoint-Load-Metrics': text })))).toEqual(plain(ENVOY));
    expect(plain(ok(readOrcaReport(['content-length', '2', 'endpoint-load-metrics', text])))).toEqual(
      plain(ENVOY),
    );
    expect(plain(ok(readOrcaReport(new Map([['endpoint-load-metrics', text]]))))).toEqual(plain(ENVOY));
    // A repeated header: the first value counts.
    expect(ok(readOrcaReport({ 'endpoint-load-metrics': ['TEXT eps=1', 'TEXT eps=2'] })).eps).toBe(1);
    // Both headers: the binary one wins, even when the other is bad.
    expect(
      plain(
        ok(
          readOrcaReport({
            'endpoint-load-metrics': 'cpu_utilization:0.7',
            'endpoint-load-metrics-bin': SPEC_BIN,
          }),
        ),
      ),
    ).toEqual(plain(SPEC));
    expect(rejected(readOrcaReport({ 'endpoint-load-metrics-bin': '' }))).toMatch(/empty/);
  });

  it('parses an endpoint’s repeated header value once (readEndpointReport)', () => {
    const ep = states(1)[0];
    if (ep === undefined) throw new Error('no endpoint');
    expect(readEndpointReport(ep, { 'content-type': 'text/plain' })).toBeUndefined();
    expect(ep.load).toBeUndefined();
    const text = formatOrcaText(ENVOY);
    const first = readEndpointReport(ep, { 'endpoint-load-metrics': text });
    expect(plain(ok(first))).toEqual(plain(ENVOY));
    // The same value again (a new string, as each response brings): the same result object.
    const again = readEndpointReport(ep, { 'endpoint-load-metrics': `${text} `.trimEnd() });
    expect(again).toBe(first);
    const other = readEndpointReport(ep, ['endpoint-load-metrics', formatOrcaText(SPEC)]);
    expect(other).not.toBe(first);
    expect(plain(ok(other))).toEqual(plain(SPEC));
    // The binary header is told apart from the text one, and a bad value is remembered as bad.
    expect(plain(ok(readEndpointReport(ep, { 'endpoint-load-metrics-bin': SPEC_BIN })))).toEqual(plain(SPEC));
    const bad = readEndpointReport(ep, { 'endpoint-load-metrics': 'TEXT eps=x' });
    expect(rejected(bad)).toMatch(/not a finite number/);
    expect(readEndpointReport(ep, { 'endpoint-load-metrics': 'TEXT eps=x' })).toBe(bad);
    // Reading records nothing by itself: the transport passes a good report to reportLoad.
    expect(ep.load?.reports).toBe(0);
  });

  it('decodes an endpoint’s repeated protobuf report once (readEndpointReportBytes, gRPC trailers)', () => {
    const ep = states(1)[0];
    if (ep === undefined) throw new Error('no endpoint');
    const bytes = encodeOrcaLoadReport(SPEC);
    const first = readEndpointReportBytes(ep, bytes);
    expect(plain(ok(first))).toEqual(plain(SPEC));
    // Equal bytes in a new buffer (each call brings its own): the same result object.
    expect(readEndpointReportBytes(ep, Buffer.from(bytes))).toBe(first);
    // The remembered copy is the endpoint's: a reused buffer changing afterwards does not matter.
    const reused = Buffer.from(bytes);
    readEndpointReportBytes(ep, encodeOrcaLoadReport(ENVOY));
    const envoy = readEndpointReportBytes(ep, reused);
    expect(plain(ok(envoy))).toEqual(plain(SPEC));
    reused.fill(0);
    expect(readEndpointReportBytes(ep, bytes)).toBe(envoy);
    // A header value read in between is told apart; malformed bytes are remembered as bad.
    readEndpointReport(ep, { 'endpoint-load-metrics': formatOrcaText(ENVOY) });
    expect(readEndpointReportBytes(ep, bytes)).not.toBe(envoy);
    const bad = readEndpointReportBytes(ep, Buffer.from([0x09, 0x01]));
    expect(rejected(bad)).toMatch(/truncated|malformed|end/i);
    expect(readEndpointReportBytes(ep, Buffer.from([0x09, 0x01]))).toBe(bad);
  });

  it('round-trips every format, keeps JSON ASCII and bounds header size', () => {
    for (const format of ['json', 'binary'] as const) {
      const value = formatOrcaHeader(FULL, format);
      expect(plain(ok(parseOrcaHeader(value))), format).toEqual(plain(FULL));
    }
    // TEXT carries names of visible ASCII without `,` and `=` only.
    const ascii = orcaLoadReport({ ...FULL, namedMetrics: { in_flight: 12, 'ev.loop/p99': 3.5 } });
    expect(plain(ok(parseOrcaHeader(formatOrcaHeader(ascii, 'text'))))).toEqual(plain(ascii));
    expect(formatOrcaText(SPEC)).toBe(
      'TEXT cpu_utilization=0.1,rps_fractional=2,named_metrics.foo=0.1,named_metrics.bar=0.2',
    );
    expect(formatOrcaBin(SPEC)).toBe(`BIN ${SPEC_BIN}`);
    expect(formatOrcaJson(FULL)).toMatch(/^JSON [\x20-\x7e]+$/);
    expect(() => formatOrcaText(orcaLoadReport({ namedMetrics: { 'a b': 1 } }))).toThrow(/TEXT form/);
    expect(formatOrcaHeader(EMPTY_ORCA_REPORT)).toBe('TEXT ');
    expect(plain(ok(parseOrcaHeader('TEXT ')))).toEqual(plain(EMPTY_ORCA_REPORT));
    const long = `TEXT ${'named_metrics.x=1,'.repeat(300)}`;
    expect(rejected(parseOrcaHeader(long))).toMatch(/exceeds the limit of 4096/);
  });

  it('never throws on arbitrary header values (fuzz)', () => {
    const prefixed = fc.tuple(fc.constantFrom('TEXT ', 'JSON ', 'BIN ', ''), fc.string({ maxLength: 80 }));
    fc.assert(
      fc.property(prefixed, ([prefix, body]) => {
        expect(typeof parseOrcaHeader(prefix + body).ok).toBe('boolean');
      }),
      { numRuns: 3000 },
    );
  });

  it('refuses to build a report that breaks the proto rules', () => {
    expect(() => orcaLoadReport({ memUtilization: 1.2 })).toThrow(RangeError);
    expect(() => orcaLoadReport({ namedMetrics: { q: Number.NaN } })).toThrow(
      /named_metrics.q must be a finite/,
    );
    expect(() => orcaLoadReport({ utilization: { '': 0.5 } })).toThrow(/empty metric name/);
  });
});

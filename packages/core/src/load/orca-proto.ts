import {
  DEFAULT_ORCA_LIMITS,
  ORCA_MAPS,
  ORCA_SCALARS,
  type OrcaLimits,
  type OrcaLoadReport,
  type OrcaMapKey,
  type OrcaParseResult,
  type OrcaScalarKey,
  parseFailure,
  parseSuccess,
  ReportBuilder,
} from './orca.js';

/**
 * The protobuf wire form of `xds.data.orca.v3.OrcaLoadReport`, written by hand: the message is
 * five doubles, one deprecated integer and three `map<string, double>`, so core needs no protobuf
 * runtime (and loads no `.proto` file) to produce or read the per-call report.
 *
 * The encoder writes the canonical proto3 form, exactly what protobufjs (grpc-js) writes for the
 * same report: fields in field-number order, scalars only when non-zero, each map entry as a
 * length-delimited `{ key = 1; value = 2 }` message with both members present, entries in the
 * order of the map's keys. The decoder accepts any valid encoding: fields in any order, repeated
 * scalars (the last wins), unknown fields of every non-group wire type (skipped, as protobuf
 * parsers do for forward compatibility). It rejects truncated input, wrong wire types for known
 * fields, groups, invalid UTF-8 in metric names and values the proto's rules forbid.
 */

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

function writeVarint(buf: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    buf[pos++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[pos++] = n;
  return pos;
}

const SCALAR_BY_FIELD: Record<number, OrcaScalarKey> = Object.create(null);
for (const s of ORCA_SCALARS) SCALAR_BY_FIELD[s.field] = s.key;
const MAP_BY_FIELD: Record<number, OrcaMapKey> = Object.create(null);
for (const m of ORCA_MAPS) MAP_BY_FIELD[m.field] = m.key;
/** The fields in number order, for the encoder. */
const FIELDS: ReadonlyArray<{
  readonly field: number;
  readonly scalar?: OrcaScalarKey;
  readonly map?: OrcaMapKey;
}> = [
  ...ORCA_SCALARS.map((s) => ({ field: s.field, scalar: s.key })),
  ...ORCA_MAPS.map((m) => ({ field: m.field, map: m.key })),
].sort((a, b) => a.field - b.field);

/** Serializes a report to protobuf bytes (a Buffer, ready for a gRPC `-bin` trailer). */
export function encodeOrcaLoadReport(report: OrcaLoadReport): Buffer {
  let size = 0;
  // Key lengths are computed once and reused by the writing pass.
  const keyLengths: number[] = [];
  for (const f of FIELDS) {
    if (f.scalar !== undefined) {
      if (report[f.scalar] !== 0) size += 9;
      continue;
    }
    const map = report[f.map as OrcaMapKey];
    for (const name in map) {
      const k = Buffer.byteLength(name, 'utf8');
      keyLengths.push(k);
      const entry = 1 + varintSize(k) + k + 9;
      size += 1 + varintSize(entry) + entry;
    }
  }
  const buf = Buffer.allocUnsafe(size);
  let pos = 0;
  let ki = 0;
  for (const f of FIELDS) {
    if (f.scalar !== undefined) {
      const v = report[f.scalar];
      if (v === 0) continue;
      buf[pos++] = (f.field << 3) | WIRE_I64;
      buf.writeDoubleLE(v, pos);
      pos += 8;
      continue;
    }
    const map = report[f.map as OrcaMapKey];
    for (const name in map) {
      const k = keyLengths[ki++] as number;
      buf[pos++] = (f.field << 3) | WIRE_LEN;
      pos = writeVarint(buf, pos, 1 + varintSize(k) + k + 9);
      buf[pos++] = (1 << 3) | WIRE_LEN;
      pos = writeVarint(buf, pos, k);
      pos += buf.write(name, pos, k, 'utf8');
      buf[pos++] = (2 << 3) | WIRE_I64;
      buf.writeDoubleLE(map[name] as number, pos);
      pos += 8;
    }
  }
  return buf;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A bounded reader over protobuf bytes. */
class Reader {
  pos: number;
  readonly end: number;
  readonly view: DataView;
  constructor(
    readonly bytes: Uint8Array,
    start: number,
    end: number,
  ) {
    this.pos = start;
    this.end = end;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  /** A varint of at most 10 bytes as a number (exact below 2^53); -1 when truncated or too long. */
  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) return -1;
      const b = this.bytes[this.pos++] as number;
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 128;
    }
    return -1;
  }
  /** A little-endian double; the caller checks that 8 bytes remain. */
  double(): number {
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }
  /** Skips one value of `wire` type; false when it does not fit or the type is not skippable. */
  skip(wire: number): boolean {
    switch (wire) {
      case WIRE_VARINT:
        return this.varint() >= 0;
      case WIRE_I64:
        this.pos += 8;
        return this.pos <= this.end;
      case WIRE_I32:
        this.pos += 4;
        return this.pos <= this.end;
      case WIRE_LEN: {
        const n = this.varint();
        if (n < 0 || n > this.end - this.pos) return false;
        this.pos += n;
        return true;
      }
      default:
        return false; // 3 and 4 (groups, long deprecated) and 6, 7 (invalid)
    }
  }
}

/** Decodes one map entry (`{ string key = 1; double value = 2; }`) into the builder. */
function readEntry(r: Reader, end: number, b: ReportBuilder, map: OrcaMapKey): string | undefined {
  let name = '';
  let value = 0;
  while (r.pos < end) {
    const tag = r.varint();
    if (tag < 0) return 'truncated map entry';
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field === 1) {
      if (wire !== WIRE_LEN) return `map entry key has wire type ${wire}, expected 2`;
      const n = r.varint();
      if (n < 0 || n > end - r.pos) return 'truncated metric name';
      try {
        name = utf8.decode(r.bytes.subarray(r.pos, r.pos + n));
      } catch {
        return 'metric name is not valid UTF-8';
      }
      r.pos += n;
    } else if (field === 2) {
      if (wire !== WIRE_I64) return `map entry value has wire type ${wire}, expected 1`;
      if (end - r.pos < 8) return 'truncated map entry';
      value = r.double();
    } else if (field === 0 || !r.skip(wire) || r.pos > end) {
      return 'malformed map entry';
    }
  }
  if (r.pos !== end) return 'truncated map entry';
  b.setEntry(map, name, value);
  return undefined;
}

/**
 * Parses protobuf bytes into a validated report. Never throws: malformed or out-of-rule input gives
 * `{ ok: false, error }` naming what is wrong.
 */
export function decodeOrcaLoadReport(
  bytes: Uint8Array,
  limits: OrcaLimits = DEFAULT_ORCA_LIMITS,
): OrcaParseResult {
  if (bytes.length > limits.maxHeaderBytes)
    return parseFailure(`ORCA report of ${bytes.length} bytes exceeds the limit of ${limits.maxHeaderBytes}`);
  const r = new Reader(bytes, 0, bytes.length);
  const b = new ReportBuilder();
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag < 0) return parseFailure('truncated ORCA report (field tag)');
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field === 0) return parseFailure('invalid field number 0 in ORCA report');
    const scalar = SCALAR_BY_FIELD[field];
    if (scalar !== undefined) {
      if (wire !== WIRE_I64) return parseFailure(`field ${field} has wire type ${wire}, expected 1 (double)`);
      if (r.end - r.pos < 8) return parseFailure('truncated ORCA report');
      b[scalar] = r.double();
      continue;
    }
    const map = MAP_BY_FIELD[field];
    if (map !== undefined) {
      if (wire !== WIRE_LEN)
        return parseFailure(`field ${field} has wire type ${wire}, expected 2 (map entry)`);
      const n = r.varint();
      if (n < 0 || n > r.end - r.pos) return parseFailure('truncated ORCA report (map entry)');
      const problem = readEntry(r, r.pos + n, b, map);
      if (problem !== undefined) return parseFailure(problem);
      if (b.entries > limits.maxEntries)
        return parseFailure(`too many metrics (more than ${limits.maxEntries})`);
      continue;
    }
    if (field === 3 && wire !== WIRE_VARINT)
      return parseFailure(`field 3 (rps) has wire type ${wire}, expected 0`);
    // The deprecated `rps` (3) and unknown fields are skipped.
    if (!r.skip(wire)) return parseFailure(`truncated or malformed field ${field} (wire type ${wire})`);
  }
  const problem = b.check(limits);
  return problem === undefined ? parseSuccess(b.finish()) : parseFailure(problem);
}

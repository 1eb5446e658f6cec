import {
  type Server,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import { isServing, type Mesh, onServingChange } from '@meshlet/core';

/** `grpc.health.v1.HealthCheckResponse.ServingStatus`. */
export const ServingStatus = {
  UNKNOWN: 0,
  SERVING: 1,
  NOT_SERVING: 2,
  SERVICE_UNKNOWN: 3,
} as const;
export type ServingStatusName = keyof typeof ServingStatus;

const NAMES: readonly ServingStatusName[] = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

export interface HealthCheckRequest {
  service: string;
}
export interface HealthCheckResponse {
  status: ServingStatusName;
}

// ---- protobuf wire format of the two messages (field 1 each) -------------------------------

function readVarint(buf: Buffer, pos: number): [number, number] {
  let result = 0;
  let shift = 0;
  let p = pos;
  for (;;) {
    if (p >= buf.length) throw new Error('truncated varint');
    const b = buf[p++] as number;
    result += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) return [result, p];
    shift += 7;
    if (shift > 63) throw new Error('varint too long');
  }
}

function writeVarint(n: number, out: number[]): void {
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/** Skips one field of wire type `wt` at `pos`. */
function skipField(buf: Buffer, pos: number, wt: number): number {
  switch (wt) {
    case 0:
      return readVarint(buf, pos)[1];
    case 1:
      return pos + 8;
    case 2: {
      const [len, p] = readVarint(buf, pos);
      return p + len;
    }
    case 5:
      return pos + 4;
    default:
      throw new Error(`unsupported wire type ${wt}`);
  }
}

export function encodeRequest(req: HealthCheckRequest): Buffer {
  if (!req.service) return Buffer.alloc(0);
  const s = Buffer.from(req.service, 'utf8');
  const head: number[] = [0x0a];
  writeVarint(s.length, head);
  return Buffer.concat([Buffer.from(head), s]);
}

export function decodeRequest(buf: Buffer): HealthCheckRequest {
  let service = '';
  let pos = 0;
  while (pos < buf.length) {
    const [key, p] = readVarint(buf, pos);
    const field = Math.floor(key / 8);
    const wt = key & 7;
    if (field === 1 && wt === 2) {
      const [len, p2] = readVarint(buf, p);
      service = buf.toString('utf8', p2, p2 + len);
      pos = p2 + len;
    } else {
      pos = skipField(buf, p, wt);
    }
  }
  return { service };
}

export function encodeResponse(res: HealthCheckResponse): Buffer {
  const code = ServingStatus[res.status];
  if (code === 0) return Buffer.alloc(0);
  return Buffer.from([0x08, code]);
}

export function decodeResponse(buf: Buffer): HealthCheckResponse {
  let code = 0;
  let pos = 0;
  while (pos < buf.length) {
    const [key, p] = readVarint(buf, pos);
    const field = Math.floor(key / 8);
    const wt = key & 7;
    if (field === 1 && wt === 0) {
      [code, pos] = readVarint(buf, p);
    } else {
      pos = skipField(buf, p, wt);
    }
  }
  return { status: NAMES[code] ?? 'UNKNOWN' };
}

/** The `grpc.health.v1.Health` service definition (Check and Watch). */
export const healthServiceDefinition: ServiceDefinition = {
  Check: {
    path: '/grpc.health.v1.Health/Check',
    requestStream: false,
    responseStream: false,
    requestSerialize: encodeRequest,
    requestDeserialize: decodeRequest,
    responseSerialize: encodeResponse,
    responseDeserialize: decodeResponse,
    originalName: 'check',
  },
  Watch: {
    path: '/grpc.health.v1.Health/Watch',
    requestStream: false,
    responseStream: true,
    requestSerialize: encodeRequest,
    requestDeserialize: decodeRequest,
    responseSerialize: encodeResponse,
    responseDeserialize: decodeResponse,
    originalName: 'watch',
  },
};

export interface MeshHealthOptions {
  /**
   * Services reported (besides the overall `""`), with their initial status; default none.
   * Their status follows the overall status unless set explicitly with `setStatus`.
   */
  readonly services?: readonly string[];
}

/**
 * The standard `grpc.health.v1.Health` service (Check + Watch) tied to the mesh: the overall
 * status (`service: ""`) and every registered service are SERVING while the mesh is ready and not
 * draining, NOT_SERVING otherwise (`startDraining(mesh)`, `drainServer`, `mesh.close()`). Watch
 * streams send the current status at once and every change after; unknown services are
 * NOT_FOUND for Check and SERVICE_UNKNOWN for Watch, as the protocol says.
 */
export class MeshHealth {
  readonly #mesh: Mesh | undefined;
  readonly #explicit = new Map<string, ServingStatusName>();
  readonly #known = new Set<string>(['']);
  readonly #watchers = new Map<string, Set<ServerWritableStream<HealthCheckRequest, HealthCheckResponse>>>();
  readonly #last = new Map<
    ServerWritableStream<HealthCheckRequest, HealthCheckResponse>,
    ServingStatusName
  >();
  readonly #off: (() => void) | undefined;
  #shutdown = false;

  constructor(mesh?: Mesh, options: MeshHealthOptions = {}) {
    this.#mesh = mesh;
    for (const s of options.services ?? []) this.#known.add(s);
    this.#off = mesh ? onServingChange(mesh, () => this.#notifyAll()) : undefined;
  }

  /** The overall status: from the mesh (ready and not draining), or SERVING without a mesh. */
  #overall(): ServingStatusName {
    if (this.#shutdown) return 'NOT_SERVING';
    if (!this.#mesh) return 'SERVING';
    return isServing(this.#mesh) ? 'SERVING' : 'NOT_SERVING';
  }

  /** The status of `service` (`""` = the whole server); undefined when it is not known. */
  status(service: string): ServingStatusName | undefined {
    if (!this.#known.has(service)) return undefined;
    const overall = this.#overall();
    if (overall === 'NOT_SERVING' || service === '') return overall;
    return this.#explicit.get(service) ?? overall;
  }

  /** Sets one service's status (`""` cannot be set: it follows the mesh). */
  setStatus(service: string, value: ServingStatusName): void {
    this.#known.add(service);
    this.#explicit.set(service, value);
    this.#notify(service);
  }

  /** Reports NOT_SERVING for everything from now on (used by drain). */
  shutdown(): void {
    this.#shutdown = true;
    this.#notifyAll();
  }

  #notifyAll(): void {
    for (const s of this.#watchers.keys()) this.#notify(s);
  }

  #notify(service: string): void {
    const set = this.#watchers.get(service);
    if (!set) return;
    const st = this.status(service) ?? 'SERVICE_UNKNOWN';
    for (const call of set) this.#send(call, st);
  }

  #send(call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>, st: ServingStatusName): void {
    if (this.#last.get(call) === st) return;
    this.#last.set(call, st);
    call.write({ status: st });
  }

  /** Handlers for `server.addService(healthServiceDefinition, …)`. */
  get handlers() {
    return {
      Check: (
        call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>,
        callback: sendUnaryData<HealthCheckResponse>,
      ) => {
        const st = this.status(call.request.service);
        if (st === undefined)
          callback({ code: status.NOT_FOUND, details: `unknown service "${call.request.service}"` });
        else callback(null, { status: st });
      },
      Watch: (call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
        const service = call.request.service;
        let set = this.#watchers.get(service);
        if (!set) {
          set = new Set();
          this.#watchers.set(service, set);
        }
        set.add(call);
        const done = () => {
          set.delete(call);
          this.#last.delete(call);
        };
        call.on('cancelled', done);
        call.on('close', done);
        this.#send(call, this.status(service) ?? 'SERVICE_UNKNOWN');
      },
    };
  }

  /** Adds the Health service to a grpc-js server. */
  addToServer(server: Server): void {
    server.addService(healthServiceDefinition, this.handlers);
  }

  /** Ends open Watch streams and stops following the mesh. */
  close(): void {
    this.#off?.();
    for (const set of this.#watchers.values()) for (const call of set) call.end();
    this.#watchers.clear();
  }
}

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type CallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  type Client,
  type ClientWritableStream,
  credentials,
  Metadata,
  type ServiceError,
  type StatusObject,
  status,
} from '@grpc/grpc-js';
import {
  createMeshClient,
  defaultChannelCredentials,
  spiffeIdOfCertificate,
} from '../../packages/grpc/src/index.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { createCa, issueWorkloadCertificate, writeCertDirectory } from '../../packages/tls/src/index.js';
import {
  type ClientCtor,
  IdempotentService,
  type IdempotentServiceClient,
  type Payload,
  TestService,
  type TestServiceClient,
  UnimplementedService,
  type UnimplementedServiceClient,
} from './interop-proto.js';
import { CALL_ID, type Execution, InteropServer } from './interop-server.js';
import {
  type MetadataRecord,
  metadataRecord,
  stableDetails,
  TELEMETRY_KEYS,
  withoutKeys,
} from './observe.js';

/**
 * The three clients every case runs through:
 * - `grpc-js`: the reference, a plain grpc-js client on `dns:127.0.0.1:PORT`, default options;
 * - `mesh-target`: a plain grpc-js client on `mesh:///interop` (meshlet's resolver and LB policy);
 * - `mesh-client`: `createMeshClient(TestService, 'mesh:///interop')` (every call a MeshCall).
 */
export type ClientKind = 'grpc-js' | 'mesh-target' | 'mesh-client';
export const KINDS: readonly ClientKind[] = ['grpc-js', 'mesh-target', 'mesh-client'];
export const KIND_LABELS: Readonly<Record<ClientKind, string>> = {
  'grpc-js': 'raw grpc-js, dns:127.0.0.1 (reference)',
  'mesh-target': 'grpc-js client on mesh:///interop',
  'mesh-client': 'createMeshClient on mesh:///interop',
};

export const SERVICE = 'interop';
export const TARGET = `mesh:///${SERVICE}`;
const TD = 'spiffe://cluster.local/ns/default/sa';
export const SERVER_IDENTITY = `${TD}/interop-server`;
export const CLIENT_IDENTITY = `${TD}/conformance-client`;
/** An identity no server here has. */
export const OTHER_IDENTITY = `${TD}/someone-else`;

/** grpc-js's gzip (`CompressionAlgorithms.gzip`). */
const GZIP = 2;
const COMPRESSED: ChannelOptions = { 'grpc.default_compression_algorithm': GZIP };

/**
 * grpc-js's own retries for the idempotent method (a service-config retry policy), so the
 * reference shows what gRFC A6 retries do: retry a call until response headers arrive, never after.
 */
const GRPC_JS_RETRY_POLICY: ChannelOptions = {
  'grpc.service_config': JSON.stringify({
    methodConfig: [
      {
        name: [{ service: 'meshlet.conformance.IdempotentService' }],
        retryPolicy: {
          maxAttempts: 3,
          initialBackoff: '0.01s',
          maxBackoff: '0.05s',
          backoffMultiplier: 2,
          retryableStatusCodes: ['UNAVAILABLE'],
        },
      },
    ],
  }),
};

/** mTLS material from meshlet's development CA. */
export interface TlsEnv {
  readonly ca: Buffer;
  readonly clientCert: Buffer;
  readonly clientKey: Buffer;
  /** The client's certificate directory (`tls.crt`, `tls.key`, `ca.crt`) for `tls: { dir }`. */
  readonly clientDir: string;
  readonly server: { readonly cert: Buffer; readonly key: Buffer };
  readonly cleanup: () => void;
}

export async function issueTlsEnv(): Promise<TlsEnv> {
  const ca = await createCa();
  const server = await issueWorkloadCertificate({ ca, spiffeId: SERVER_IDENTITY });
  const client = await issueWorkloadCertificate({ ca, spiffeId: CLIENT_IDENTITY });
  const clientDir = mkdtempSync(join(tmpdir(), 'meshlet-conformance-'));
  await writeCertDirectory(clientDir, { cert: client.cert, key: client.key, ca: ca.cert });
  return {
    ca: Buffer.from(ca.cert),
    clientCert: Buffer.from(client.cert),
    clientKey: Buffer.from(client.key),
    clientDir,
    server: { cert: Buffer.from(server.cert), key: Buffer.from(server.key) },
    cleanup: () => rmSync(clientDir, { recursive: true, force: true }),
  };
}

/** The server and, for the mTLS matrix, the certificates. */
export interface Env {
  readonly server: InteropServer;
  readonly tls: TlsEnv | undefined;
}

export async function startEnv(tls: boolean): Promise<Env> {
  const material = tls ? await issueTlsEnv() : undefined;
  const server = await InteropServer.start({
    tls: material ? { ca: material.ca, cert: material.server.cert, key: material.server.key } : undefined,
  });
  return { server, tls: material };
}

export async function stopEnv(env: Env | undefined): Promise<void> {
  if (env === undefined) return;
  await env.server.close();
  env.tls?.cleanup();
}

/** The clients of one kind, on one mesh (none for the reference). */
export interface Clients {
  readonly kind: ClientKind;
  readonly test: TestServiceClient;
  /** A TestService client whose channel compresses requests (gzip). */
  readonly compressed: TestServiceClient;
  readonly unimplemented: UnimplementedServiceClient;
  readonly idempotent: IdempotentServiceClient;
  readonly mesh: Mesh | undefined;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** mTLS: the identity clients expect of the server (default: its own, SERVER_IDENTITY). */
  readonly serverIdentity?: string | undefined;
}

/** Raw grpc-js mTLS: the same client certificate, the server checked by its SPIFFE ID (no DNS SAN). */
function rawTlsCredentials(tls: TlsEnv, expected: string): ChannelCredentials {
  return credentials.createSsl(tls.ca, tls.clientKey, tls.clientCert, {
    checkServerIdentity: (_host, cert) =>
      spiffeIdOfCertificate(cert) === expected
        ? undefined
        : new Error(`server presented ${spiffeIdOfCertificate(cert)}, expected ${expected}`),
  });
}

/**
 * Opens the clients of `kind`. A meshed kind gets its own mesh (`createMesh`, static service
 * `interop`, mTLS from `tls: { dir }` in the mTLS matrix), closed with the clients. Every such
 * mesh has the same configuration; a plain client's `mesh:///interop` resolves through the most
 * recently attached open mesh, which for freshly opened clients is their own.
 */
export async function openClients(kind: ClientKind, env: Env, options: OpenOptions = {}): Promise<Clients> {
  const made: Client[] = [];
  const track = <T extends Client>(c: T): T => {
    made.push(c);
    return c;
  };
  const identity = options.serverIdentity ?? SERVER_IDENTITY;
  if (kind === 'grpc-js') {
    const target = `dns:${env.server.address}`;
    const creds = env.tls ? rawTlsCredentials(env.tls, identity) : credentials.createInsecure();
    // TLS to an IP address: no SNI (RFC 6066); the server is checked by its SPIFFE ID.
    const base: ChannelOptions = env.tls ? { 'grpc.ssl_target_name_override': SERVICE } : {};
    return {
      kind,
      test: track(new TestService(target, creds, base)),
      compressed: track(new TestService(target, creds, { ...base, ...COMPRESSED })),
      unimplemented: track(new UnimplementedService(target, creds, base)),
      idempotent: track(new IdempotentService(target, creds, { ...base, ...GRPC_JS_RETRY_POLICY })),
      mesh: undefined,
      close: async () => {
        for (const c of made) c.close();
      },
    };
  }
  const mesh = await createMesh({
    ...(env.tls ? { tls: { dir: env.tls.clientDir, watch: false } } : {}),
    services: {
      [SERVICE]: {
        endpoints: [env.server.address],
        ...(env.tls ? { identity } : {}),
      },
    },
  });
  await mesh.ready();
  const close = async () => {
    for (const c of made) c.close();
    await mesh.close();
  };
  if (kind === 'mesh-target') {
    // A plain grpc-js client is given its credentials; with mTLS, the mesh's own (its workload
    // certificate, the service's identity checked).
    const rt = mesh.service(SERVICE);
    if (rt === undefined) throw new Error(`mesh has no service ${SERVICE}`);
    const creds = env.tls ? defaultChannelCredentials(mesh, rt) : credentials.createInsecure();
    return {
      kind,
      test: track(new TestService(TARGET, creds)),
      compressed: track(new TestService(TARGET, creds, COMPRESSED)),
      unimplemented: track(new UnimplementedService(TARGET, creds)),
      idempotent: track(new IdempotentService(TARGET, creds)),
      mesh,
      close,
    };
  }
  const meshClient = <T extends Client>(ctor: ClientCtor<T>, channelOptions?: ChannelOptions): T =>
    track(createMeshClient(ctor, TARGET, channelOptions ? { channelOptions } : {}));
  return {
    kind,
    test: meshClient(TestService),
    compressed: meshClient(TestService, COMPRESSED),
    unimplemented: meshClient(UnimplementedService),
    idempotent: meshClient(IdempotentService),
    mesh,
    close,
  };
}

// --- calls and what the client saw of them ---

let nextCall = 0;

/** A fresh call id and request metadata carrying it (plus `extra`). */
export function callMetadata(extra: Record<string, string | Buffer> = {}): { id: string; md: Metadata } {
  const id = `call-${++nextCall}`;
  const md = new Metadata();
  md.set(CALL_ID, id);
  for (const [k, v] of Object.entries(extra)) md.set(k, v);
  return { id, md };
}

/** A payload reduced to what cases compare: size and whether it is all zeros. */
export interface PayloadView {
  readonly type: string | undefined;
  readonly size: number;
  readonly zeros: boolean;
}

export function payloadView(p: Payload | null | undefined): PayloadView | null {
  if (p === null || p === undefined) return null;
  const body = p.body ?? Buffer.alloc(0);
  return { type: p.type, size: body.length, zeros: body.every((b) => b === 0) };
}

/** Everything a client saw of one call. */
export interface CallView {
  readonly code: number;
  readonly details: string;
  /** Response headers (the `metadata` event); undefined when none came. */
  readonly headers: MetadataRecord | undefined;
  readonly trailers: MetadataRecord | undefined;
  /** The order of the call's events: `metadata`, `data`, `status` (unary: `callback` too). */
  readonly events: readonly string[];
  /** `call.getPeer()` when the response headers arrived, and when the status arrived. */
  readonly peerAtMetadata: string | undefined;
  readonly peerAtStatus: string;
}

class Recorder {
  code = -1;
  details = '';
  headers: MetadataRecord | undefined;
  trailers: MetadataRecord | undefined;
  events: string[] = [];
  peerAtMetadata: string | undefined;
  peerAtStatus = '';

  view(): CallView {
    return {
      code: this.code,
      details: stableDetails(this.details),
      headers: this.headers,
      // The trailers of a deadline depend on which timer fired first (see stableDetails).
      trailers: this.code === status.DEADLINE_EXCEEDED ? undefined : this.trailers,
      events: this.events,
      peerAtMetadata: this.peerAtMetadata,
      peerAtStatus: this.peerAtStatus,
    };
  }
}

/** What `observe` needs of a grpc-js call (an EventEmitter with `getPeer`). */
interface Observable {
  on(event: 'metadata', fn: (md: Metadata) => void): unknown;
  on(event: 'status', fn: (st: StatusObject) => void): unknown;
  getPeer(): string;
}

function observe(call: Observable, rec: Recorder, onMetadata?: () => void): Promise<void> {
  call.on('metadata', (md: Metadata) => {
    rec.events.push('metadata');
    rec.headers = metadataRecord(md);
    rec.peerAtMetadata = call.getPeer();
    onMetadata?.();
  });
  return new Promise((resolve) => {
    call.on('status', (st: StatusObject) => {
      rec.events.push('status');
      rec.code = st.code;
      rec.details = st.details;
      rec.trailers = metadataRecord(st.metadata);
      rec.peerAtStatus = call.getPeer();
      // 'end' / 'error' / the unary callback follow the status event in the same tick or the next.
      setImmediate(resolve);
    });
  });
}

type UnaryMethod<Req, Res> = (
  req: Req,
  md: Metadata,
  opts: CallOptions,
  cb: (err: ServiceError | null, value?: Res) => void,
) => Observable & { cancel(): void };

export interface UnaryView<Res> extends CallView {
  readonly response: Res | undefined;
}

export interface UnaryControl {
  /** Called when the response headers arrive. */
  readonly onMetadata?: (cancel: () => void) => void;
  /** Called right after the call started. */
  readonly afterStart?: (cancel: () => void) => void;
}

/** The response callback of a unary or client-streaming call, recorded in `rec`. */
function responseCallback<Res>(rec: Recorder) {
  let response: Res | undefined;
  let done!: () => void;
  const called = new Promise<void>((r) => {
    done = r;
  });
  const cb = (err: ServiceError | null, value?: Res) => {
    rec.events.push('callback');
    response = err ? undefined : value;
    done();
  };
  return { cb, called, response: () => response };
}

/** Makes a unary call and records everything the client saw. */
export async function unary<Req, Res>(
  method: UnaryMethod<Req, Res>,
  req: Req,
  md: Metadata,
  opts: CallOptions = {},
  control: UnaryControl = {},
): Promise<UnaryView<Res>> {
  const rec = new Recorder();
  const callback = responseCallback<Res>(rec);
  const call = method(req, md, opts, callback.cb);
  const cancel = () => call.cancel();
  const ended = observe(call, rec, control.onMetadata ? () => control.onMetadata?.(cancel) : undefined);
  control.afterStart?.(cancel);
  await Promise.all([ended, callback.called]);
  return { ...rec.view(), response: callback.response() };
}

/**
 * Makes a client-streaming call: `start` creates it with the response callback, `drive` writes to
 * it; records everything the client saw, like `unary`.
 */
export async function clientStream<Req, Res>(
  start: (cb: (err: ServiceError | null, value?: Res) => void) => ClientWritableStream<Req>,
  drive: (call: ClientWritableStream<Req>) => Promise<void>,
): Promise<UnaryView<Res>> {
  const rec = new Recorder();
  const callback = responseCallback<Res>(rec);
  const call = start(callback.cb);
  call.on('error', () => {});
  const ended = observe(call, rec);
  await drive(call);
  await Promise.all([ended, callback.called]);
  return { ...rec.view(), response: callback.response() };
}

export interface StreamView<Res> extends CallView {
  readonly messages: readonly Res[];
}

interface ReadableCall<Res> extends Observable {
  on(event: 'metadata', fn: (md: Metadata) => void): unknown;
  on(event: 'status', fn: (st: StatusObject) => void): unknown;
  on(event: 'data', fn: (m: Res) => void): unknown;
  on(event: 'error', fn: (e: Error) => void): unknown;
}

/** Collects a call's response stream, headers and status. */
export async function collect<Res, Out = Res>(
  call: ReadableCall<Res>,
  map: (m: Res) => Out,
  onData?: (m: Res, count: number) => void,
): Promise<StreamView<Out>> {
  const rec = new Recorder();
  const messages: Out[] = [];
  call.on('data', (m: Res) => {
    if (rec.events[rec.events.length - 1] !== 'data') rec.events.push('data');
    messages.push(map(m));
    onData?.(m, messages.length);
  });
  call.on('error', () => {});
  await observe(call, rec);
  return { ...rec.view(), messages };
}

// --- what the server saw ---

/** What the server saw of one call, as compared between clients. */
export interface ServerView {
  readonly executions: number;
  readonly methods: readonly string[];
  /** Request metadata, without the mesh's documented telemetry keys. */
  readonly metadata: readonly MetadataRecord[];
  /** Per execution: `none`, `caller deadline` (within 100 ms of the client's), or how far off. */
  readonly deadlines: readonly string[];
  readonly messages: readonly number[];
  readonly answered: readonly boolean[];
  readonly cancelled: readonly boolean[];
  readonly peerIdentities: readonly (string | undefined)[];
  /** `awaitRelease` calls: what ended the server's wait (the client's release, or its patience). */
  readonly releasedBy: readonly (string | undefined)[];
}

export function deadlineView(serverDeadline: number, clientDeadline: number | undefined): string {
  if (!Number.isFinite(serverDeadline)) return 'none';
  if (clientDeadline === undefined) return 'a deadline the caller did not set';
  const off = serverDeadline - clientDeadline;
  return Math.abs(off) <= 100 ? 'caller deadline' : `${Math.round(off)} ms from the caller deadline`;
}

export function serverView(execs: readonly Execution[], clientDeadline?: number): ServerView {
  return {
    executions: execs.length,
    methods: execs.map((e) => e.method),
    metadata: execs.map((e) => withoutKeys(e.metadata, TELEMETRY_KEYS)),
    deadlines: execs.map((e) => deadlineView(e.deadline, clientDeadline)),
    messages: execs.map((e) => e.messages),
    answered: execs.map((e) => e.answered),
    cancelled: execs.map((e) => e.cancelled),
    peerIdentities: execs.map((e) => e.peerIdentity),
    releasedBy: execs.map((e) => e.releasedBy),
  };
}

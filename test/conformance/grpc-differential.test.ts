/**
 * Differential tests: the same call against the same plain grpc-js server, through a raw grpc-js
 * client (the reference) and through `createMeshClient`, a `meshClientOptions` client and a plain
 * grpc-js client on `mesh:///diff`, compared field by field — what the caller observes (the order
 * and count of events, the error object, status, trailers) and what the server saw. They cover
 * what a grpc-js user hits beyond the interop cases of grpc-interop.test.ts: events when the
 * server fails mid-stream, `cancel()` at each stage, deadlines (a Date, passed, not a time),
 * `waitForReady`, call credentials that fail or never answer, the client's own and per-call
 * interceptors, `close()`, message and metadata size limits, backpressure. A difference a
 * documented mesh feature explains is asserted as such, with the doc named (docs/semantics.md,
 * docs/grpc.md).
 */

import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import {
  CallCredentials,
  type CallOptions,
  type Client,
  type ClientDuplexStream,
  type ClientReadableStream,
  type ClientWritableStream,
  connectivityState,
  credentials,
  InterceptingCall,
  type Interceptor,
  Metadata,
  makeGenericClientConstructor,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type ServiceError,
  type StatusObject,
  status,
} from '@grpc/grpc-js';
import type { Mesh } from '@meshlet/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeshClient, meshClientOptions } from '../../packages/grpc/src/index.js';
import { meshFor } from '../../packages/grpc/test/helpers.js';
import { deferred, metadataRecord, stableDetails } from './observe.js';

// --- a JSON service whose handlers do what the request says -----------------------------------

interface Req {
  /**
   * `ok`, `fail` (status `code`, trailer), `hold` (never answer), `big` (`size` bytes back),
   * `stall` (bidi: stop reading the client's messages), `flaky` (unary: UNAVAILABLE to the
   * first `n` (default 1) executions of its `id`, then answers with the
   * `grpc-previous-rpc-attempts` it got).
   */
  mode?: 'ok' | 'fail' | 'hold' | 'big' | 'stall' | 'flaky';
  /** Response messages of a server stream / bidi before its end or failure. */
  n?: number;
  code?: number;
  size?: number;
  id?: string;
  /** Send the response headers at once. */
  headers?: boolean;
  /** Unary: a trailer `x-big` of this many bytes with the answer. */
  trailerSize?: number;
}
interface Res {
  i: number;
  body?: string;
}

const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const parse = (b: Buffer) => JSON.parse(b.toString());
const method = (name: string, requestStream: boolean, responseStream: boolean) => ({
  path: `/diff.Diff/${name}`,
  requestStream,
  responseStream,
  requestSerialize: json,
  requestDeserialize: parse,
  responseSerialize: json,
  responseDeserialize: parse,
  originalName: name[0]?.toLowerCase() + name.slice(1),
});
const definition: ServiceDefinition = {
  Unary: method('Unary', false, false),
  ServerStream: method('ServerStream', false, true),
  ClientStream: method('ClientStream', true, false),
  Bidi: method('Bidi', true, true),
  /** Unary to the client, a server stream to the server: it can answer OK with 0 or 2 messages. */
  Odd: method('Odd', false, false),
};
const serverDefinition: ServiceDefinition = { ...definition, Odd: method('Odd', false, true) };
const DiffClient = makeGenericClientConstructor(definition, 'Diff');
type Cb = (err: ServiceError | null, res?: Res) => void;
interface DiffClientType extends Client {
  unary(req: Req, md: Metadata, opts: CallOptions, cb: Cb): ReturnType<Client['makeUnaryRequest']>;
  serverStream(req: Req, md: Metadata, opts: CallOptions): ClientReadableStream<Res>;
  clientStream(md: Metadata, opts: CallOptions, cb: Cb): ClientWritableStream<Req>;
  bidi(md: Metadata, opts: CallOptions): ClientDuplexStream<Req, Res>;
  odd(req: Req, md: Metadata, opts: CallOptions, cb: Cb): ReturnType<Client['makeUnaryRequest']>;
}

const TRAILER = 'x-diff-trailer';

function failure(code: number): Partial<ServiceError> {
  const metadata = new Metadata();
  metadata.set(TRAILER, 'failed');
  return { code, details: `failed with ${code}`, metadata };
}

/** What the server saw of a call, by the request's `id`. */
interface Seen {
  cancelled: boolean;
  readonly done: Promise<void>;
  settle(): void;
}
const seen = new Map<string, Seen>();
/** Executions of each `flaky` call id. */
const flaky = new Map<string, number>();
function track(id: string | undefined, call: { on(e: 'cancelled', f: () => void): unknown }): Seen {
  const d = deferred();
  const s: Seen = { cancelled: false, done: d.promise, settle: d.resolve };
  if (id !== undefined) seen.set(id, s);
  call.on('cancelled', () => {
    s.cancelled = true;
    s.settle();
  });
  return s;
}

function answer(req: Req, i: number): Res {
  return req.mode === 'big' ? { i, body: 'x'.repeat(req.size ?? 0) } : { i };
}

const handlers = {
  Unary(
    call: ServerUnaryCall<Req, Res>,
    cb: (e: Partial<ServiceError> | null, r?: Res, t?: Metadata) => void,
  ) {
    const req = call.request;
    const s = track(req.id, call);
    if (req.headers) call.sendMetadata(new Metadata());
    if (req.mode === 'hold') return;
    if (req.mode === 'flaky') {
      const n = (flaky.get(req.id ?? '') ?? 0) + 1;
      flaky.set(req.id ?? '', n);
      if (n <= (req.n ?? 1)) cb({ code: status.UNAVAILABLE, details: 'try again' });
      else cb(null, { i: n, body: String(call.metadata.get('grpc-previous-rpc-attempts')[0] ?? 'none') });
      s.settle();
      return;
    }
    const trailer = new Metadata();
    if (req.trailerSize !== undefined) trailer.set('x-big', 'b'.repeat(req.trailerSize));
    if (req.mode === 'fail') cb(failure(req.code ?? status.INTERNAL));
    else cb(null, answer(req, 0), trailer);
    s.settle();
  },
  async ServerStream(call: ServerWritableStream<Req, Res>) {
    const req = call.request;
    const s = track(req.id, call);
    if (req.headers) call.sendMetadata(new Metadata());
    for (let i = 0; i < (req.n ?? 0) && !s.cancelled; i++) {
      if (!call.write(answer(req, i))) await new Promise((r) => call.once('drain', r));
    }
    if (req.mode === 'hold' || s.cancelled) return;
    if (req.mode === 'fail') call.emit('error', failure(req.code ?? status.INTERNAL));
    else {
      const md = new Metadata();
      md.set(TRAILER, 'ok');
      call.end(md);
    }
    s.settle();
  },
  ClientStream(call: ServerReadableStream<Req, Res>, cb: (e: Partial<ServiceError> | null, r?: Res) => void) {
    let first: Req | undefined;
    let count = 0;
    let s: Seen | undefined;
    call.on('data', (m: Req) => {
      count++;
      if (first === undefined) {
        first = m;
        s = track(m.id, call);
      }
    });
    call.on('end', () => {
      if (first?.mode === 'hold') return;
      if (first?.mode === 'fail') cb(failure(first.code ?? status.INTERNAL));
      else cb(null, { i: count });
      s?.settle();
    });
  },
  Odd(call: ServerWritableStream<Req, Res>) {
    for (let i = 0; i < (call.request.n ?? 0); i++) call.write({ i });
    call.end();
  },
  Bidi(call: ServerDuplexStream<Req, Res>) {
    let i = 0;
    let s: Seen | undefined;
    call.on('data', (m: Req) => {
      if (s === undefined) s = track(m.id, call);
      if (m.mode === 'fail') {
        call.emit('error', failure(m.code ?? status.INTERNAL));
        s.settle();
        return;
      }
      if (m.mode === 'stall') call.pause();
      else if (m.mode !== 'hold') call.write({ i: i++ });
    });
    call.on('end', () => {
      call.end();
      s?.settle();
    });
  },
};

// --- what a caller observes ---------------------------------------------------------------------

interface ErrorView {
  readonly isError: boolean;
  readonly code: unknown;
  readonly details: string;
  readonly message: string;
  readonly metadata: unknown;
  readonly keys: readonly string[];
}

function errorView(e: unknown): ErrorView {
  const err = e as ServiceError;
  return {
    isError: e instanceof Error,
    code: err.code,
    details: stableDetails(String(err.details)),
    message: stableDetails(String(err.message)),
    metadata: metadataRecord(err.metadata),
    keys: Object.keys(err).sort(),
  };
}

/** Everything the caller saw of one call: events in order (each with what it carried). */
interface Observed {
  events: string[];
  status?: { code: number; details: string; trailers: unknown };
  error?: ErrorView;
  response?: unknown;
  messages: unknown[];
}

type EventSource = {
  on(event: string, fn: (...args: unknown[]) => void): unknown;
};

/**
 * Records `metadata`, `status`, `data`, `end`, `error`, `close` (the streams' events) and the
 * response callback; resolves once the call is over (status, plus callback / end-or-error and close).
 */
function record(
  call: EventSource,
  o: Observed,
  opts: { stream: boolean; callback?: Promise<void>; awaitClose?: boolean },
): Promise<void> {
  const over = deferred();
  let gotStatus = false;
  // A duplex whose writable side the caller left open never closes.
  let gotClose = !opts.stream || opts.awaitClose === false;
  const check = () => {
    if (gotStatus && gotClose) setImmediate(over.resolve);
  };
  call.on('metadata', () => o.events.push('metadata'));
  call.on('status', (...a: unknown[]) => {
    const st = a[0] as StatusObject;
    o.events.push(`status ${status[st.code]}`);
    o.status = { code: st.code, details: stableDetails(st.details), trailers: metadataRecord(st.metadata) };
    gotStatus = true;
    check();
  });
  if (opts.stream) {
    call.on('data', (...a: unknown[]) => {
      o.events.push('data');
      o.messages.push(a[0]);
    });
    call.on('end', () => o.events.push('end'));
    call.on('error', (...a: unknown[]) => {
      o.events.push('error');
      o.error = errorView(a[0]);
    });
    call.on('close', () => {
      o.events.push('close');
      gotClose = true;
      check();
    });
  }
  return opts.callback ? Promise.all([over.promise, opts.callback]).then(() => undefined) : over.promise;
}

function callbackOf(o: Observed): { cb: Cb; called: Promise<void> } {
  const d = deferred();
  return {
    cb: (err, res) => {
      o.events.push(err ? 'callback(error)' : 'callback(response)');
      if (err) o.error = errorView(err);
      else o.response = res;
      d.resolve();
    },
    called: d.promise,
  };
}

/**
 * grpc-js words the caller's deadline "Deadline exceeded after 0.101s" followed by the phases
 * that took measurable time (",name resolution: …", ",LB pick: …", ",remote_addr=…"); a mesh
 * call, whose deadline is the pipeline's timer, gives the first part only — documented:
 * docs/semantics.md (the caller's deadline "in grpc-js's words") and docs/grpc.md "Deadlines".
 * (stableDetails masks the details; the error's `message` is cut here.) Everything else must
 * be equal.
 */
const withoutPhases = (o: Observed): Observed =>
  mapWords(o, (s) => s.replace(/^((?:\d+ DEADLINE_EXCEEDED: )?Deadline exceeded after Ns),.*$/, '$1'));

/**
 * For a call the server holds past its deadline: the client and the server each time the same
 * deadline (the server from `grpc-timeout`), and either may end the call first. The client's
 * words are "Deadline exceeded after Ns", the server's status "Deadline exceeded", with raw
 * grpc-js as with the mesh, run to run; both are read as the server's, so that what is compared
 * is the outcome, not that race.
 */
const eitherSidesDeadline = (o: Observed): Observed =>
  mapWords(withoutPhases(o), (s) => s.replace(/Deadline exceeded after Ns$/, 'Deadline exceeded'));

/** `o` with `words` applied to the details and message of its error and status. */
function mapWords(o: Observed, words: (s: string) => string): Observed {
  return {
    ...o,
    ...(o.error
      ? { error: { ...o.error, details: words(o.error.details), message: words(o.error.message) } }
      : {}),
    ...(o.status ? { status: { ...o.status, details: words(o.status.details) } } : {}),
  };
}

const fresh = (): Observed => ({ events: [], messages: [] });
let nextId = 0;
const newId = () => `c${++nextId}`;

// --- the two clients ------------------------------------------------------------------------------

let server: Server;
let port: number;
let mesh: Mesh;
const clients: Client[] = [];

beforeAll(async () => {
  server = new Server();
  server.addService(serverDefinition, handlers as never);
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  mesh = await meshFor({ diff: { endpoints: [`127.0.0.1:${port}`] } });
});

afterAll(async () => {
  for (const c of clients) c.close();
  await mesh.close();
  server.forceShutdown();
});

/**
 * `grpc-js`: the reference, on `127.0.0.1:PORT`; `mesh`: `createMeshClient` (its method table
 * from the class); `mesh-options`: a grpc-js client with `meshClientOptions` (no method table: a
 * call invocation transformer tells unary calls apart); `mesh-target`: a plain grpc-js client on
 * the `mesh:` target (meshlet's resolver and picker, grpc-js's own calls).
 */
type Kind = 'grpc-js' | 'mesh' | 'mesh-options' | 'mesh-target';

interface MeshOpts {
  channelOptions?: Record<string, unknown>;
  interceptors?: Interceptor[];
}

/** A meshed client of `target` of the kind (`mesh` or `mesh-options`). */
function meshed(kind: Kind, target: string, opts: MeshOpts = {}): Client {
  const o = {
    ...(opts.channelOptions ? { channelOptions: opts.channelOptions } : {}),
    ...(opts.interceptors ? { interceptors: opts.interceptors } : {}),
  };
  if (kind === 'mesh-target')
    return new DiffClient(target, credentials.createInsecure(), {
      ...opts.channelOptions,
      ...(opts.interceptors ? { interceptors: opts.interceptors } : {}),
    });
  return kind === 'mesh'
    ? createMeshClient(DiffClient, target, o)
    : new DiffClient(target, credentials.createInsecure(), meshClientOptions(target, o));
}

function client(kind: Kind, opts: MeshOpts = {}) {
  const c =
    kind === 'grpc-js'
      ? new DiffClient(`127.0.0.1:${port}`, credentials.createInsecure(), {
          ...opts.channelOptions,
          ...(opts.interceptors ? { interceptors: opts.interceptors } : {}),
        })
      : meshed(kind, 'mesh:///diff', opts);
  clients.push(c);
  return c as unknown as DiffClientType;
}

/** Shared clients of each kind for the cases that need no options of their own. */
const shared = new Map<Kind, DiffClientType>();
function sharedClient(kind: Kind): DiffClientType {
  let c = shared.get(kind);
  if (c === undefined) {
    c = client(kind);
    shared.set(kind, c);
  }
  return c;
}

/**
 * Runs `scenario` through each kind and returns [reference, mesh]; the two meshed clients must
 * have seen the same (the caller compares the mesh's to the reference, projected as the case needs).
 */
async function both<T>(
  scenario: (c: DiffClientType, kind: Kind) => Promise<T>,
  make = sharedClient,
  /** Checks the plain client on the `mesh:` target when it differs from the mesh client (documented). */
  checkPlain?: (plain: T, ref: T) => void,
) {
  const ref = await scenario(make('grpc-js'), 'grpc-js');
  const got = await scenario(make('mesh'), 'mesh');
  const options = await scenario(make('mesh-options'), 'mesh-options');
  expect(options, 'meshClientOptions client vs createMeshClient').toEqual(got);
  const plain = await scenario(make('mesh-target'), 'mesh-target');
  if (checkPlain !== undefined) checkPlain(plain, ref);
  else expect(plain, 'grpc-js client on the mesh: target vs createMeshClient').toEqual(got);
  return [ref, got] as const;
}

// --- scenarios ------------------------------------------------------------------------------------

async function unaryCall(c: DiffClientType, req: Req, opts: CallOptions = {}, md = new Metadata()) {
  const o = fresh();
  const { cb, called } = callbackOf(o);
  const call = c.unary(req, md, opts, cb);
  await record(call as unknown as EventSource, o, { stream: false, callback: called });
  return o;
}

async function serverStream(c: DiffClientType, req: Req, opts: CallOptions = {}) {
  const o = fresh();
  const call = c.serverStream(req, new Metadata(), opts);
  await record(call as unknown as EventSource, o, { stream: true });
  return o;
}

describe('gRPC differential: createMeshClient against raw grpc-js, the same server', () => {
  describe('events, their order and count', () => {
    it('unary: OK', async () => {
      const [ref, got] = await both((c) => unaryCall(c, { mode: 'ok' }));
      // grpc-js calls back before it emits `status`.
      expect(ref.events).toEqual(['metadata', 'callback(response)', 'status OK']);
      expect(got).toEqual(ref);
    });

    it('unary: the server fails (the error object, status, trailers)', async () => {
      const [ref, got] = await both((c) => unaryCall(c, { mode: 'fail', code: status.FAILED_PRECONDITION }));
      expect(ref.error?.message).toBe('9 FAILED_PRECONDITION: failed with 9');
      expect(got).toEqual(ref);
    });

    it('unary: the server fails after sending its headers', async () => {
      const [ref, got] = await both((c) =>
        unaryCall(c, { mode: 'fail', code: status.INTERNAL, headers: true }),
      );
      expect(ref.events[0]).toBe('metadata');
      expect(got).toEqual(ref);
    });

    it('server stream: ends OK after 3 messages (trailers)', async () => {
      const [ref, got] = await both((c) => serverStream(c, { mode: 'ok', n: 3 }));
      expect(ref.messages).toHaveLength(3);
      expect(got).toEqual(ref);
    });

    it('server stream: the server fails after 3 messages', async () => {
      const [ref, got] = await both((c) => serverStream(c, { mode: 'fail', n: 3, code: status.ABORTED }));
      expect(ref.error?.code).toBe(status.ABORTED);
      expect(got).toEqual(ref);
    });

    it('server stream: the server fails before any message', async () => {
      const [ref, got] = await both((c) => serverStream(c, { mode: 'fail', n: 0, code: status.NOT_FOUND }));
      expect(got).toEqual(ref);
    });

    it('client stream: OK, and the server fails at half-close', async () => {
      const run = async (c: DiffClientType, mode: 'ok' | 'fail') => {
        const o = fresh();
        const { cb, called } = callbackOf(o);
        const call = c.clientStream(new Metadata(), {}, cb);
        const done = record(call as unknown as EventSource, o, { stream: true, callback: called });
        const writes: string[] = [];
        call.write({ mode, code: status.OUT_OF_RANGE }, () => {
          writes.push('write 1');
        });
        call.write({}, () => {
          writes.push('write 2');
        });
        call.once('finish', () => writes.push('finish'));
        call.end();
        await done;
        return { ...o, writes };
      };
      const [okRef, okGot] = await both((c) => run(c, 'ok'));
      expect(okGot).toEqual(okRef);
      const [failRef, failGot] = await both((c) => run(c, 'fail'));
      expect(failGot).toEqual(failRef);
    });

    it('bidi: half-close first, then the server ends; and the server fails mid-stream', async () => {
      const run = async (c: DiffClientType, fail: boolean) => {
        const o = fresh();
        const call = c.bidi(new Metadata(), {});
        const done = record(call as unknown as EventSource, o, { stream: true, awaitClose: !fail });
        call.write({ mode: 'ok' });
        await new Promise((r) => call.once('data', r));
        if (fail) call.write({ mode: 'fail', code: status.DATA_LOSS });
        else call.end();
        await done;
        return o;
      };
      const [okRef, okGot] = await both((c) => run(c, false));
      expect(okGot).toEqual(okRef);
      const [failRef, failGot] = await both((c) => run(c, true));
      expect(failGot).toEqual(failRef);
    });
  });

  describe('cancel() at each stage', () => {
    const cancelUnary = async (c: DiffClientType, when: 'sync' | 'tick' | 'headers') => {
      const id = newId();
      const o = fresh();
      const { cb, called } = callbackOf(o);
      const call = c.unary({ mode: 'hold', id, headers: when === 'headers' }, new Metadata(), {}, cb);
      const done = record(call as unknown as EventSource, o, { stream: false, callback: called });
      if (when === 'sync') call.cancel();
      else if (when === 'tick') setImmediate(() => call.cancel());
      else call.on('metadata', () => call.cancel());
      await done;
      const s = seen.get(id);
      if (s !== undefined) await s.done;
      return { ...o, serverSaw: s === undefined ? 'nothing' : s.cancelled ? 'cancelled' : 'not cancelled' };
    };
    it('unary, cancelled synchronously after the call is made', async () => {
      const [ref, got] = await both((c) => cancelUnary(c, 'sync'));
      expect(ref.error?.code).toBe(status.CANCELLED);
      expect(got).toEqual(ref);
    });
    it('unary, cancelled after the response headers', async () => {
      const [ref, got] = await both((c) => cancelUnary(c, 'headers'));
      expect(ref.serverSaw).toBe('cancelled');
      expect(got).toEqual(ref);
    });

    it('unary, cancelled after it ended: nothing changes; getAuthContext() during and after', async () => {
      const run = async (c: DiffClientType) => {
        const o = fresh();
        const { cb, called } = callbackOf(o);
        const call = c.unary({ mode: 'ok' }, new Metadata(), {}, cb) as unknown as {
          cancel(): void;
          getAuthContext(): unknown;
        };
        let atMetadata: unknown;
        (call as unknown as EventSource).on('metadata', () => {
          atMetadata = call.getAuthContext();
        });
        await record(call as unknown as EventSource, o, { stream: false, callback: called });
        call.cancel();
        await new Promise((r) => setImmediate(r));
        return { ...o, atMetadata, afterStatus: call.getAuthContext() };
      };
      const [ref, got] = await both(run);
      expect(ref.events).toEqual(['metadata', 'callback(response)', 'status OK']);
      expect(got).toEqual(ref);
    });
    it('server stream, cancelled mid-stream (after the first message)', async () => {
      const run = async (c: DiffClientType) => {
        const id = newId();
        const o = fresh();
        const call = c.serverStream({ mode: 'hold', n: 2, id }, new Metadata(), {});
        const done = record(call as unknown as EventSource, o, { stream: true });
        call.once('data', () => call.cancel());
        await done;
        await seen.get(id)?.done;
        return { ...o, messages: o.messages.length > 0, serverCancelled: seen.get(id)?.cancelled };
      };
      const [ref, got] = await both(run);
      expect(ref.serverCancelled).toBe(true);
      expect(got).toEqual(ref);
    });
  });

  describe('more call shapes', () => {
    it("unary: the server answers a status code outside gRPC's (99)", async () => {
      const [ref, got] = await both((c) => unaryCall(c, { mode: 'fail', code: 99 }));
      expect(got).toEqual(ref);
    });
    // (A unary call answered with two messages is left out: raw grpc-js itself hangs on it until
    // the connection drops.)
    it('unary: the server answers OK without a message', async () => {
      const run = async (c: DiffClientType, n: number) => {
        const o = fresh();
        const { cb, called } = callbackOf(o);
        const call = c.odd({ n }, new Metadata(), {}, cb);
        await record(call as unknown as EventSource, o, { stream: false, callback: called });
        return o;
      };
      const [ref, got] = await both((c) => run(c, 0));
      expect(ref.error?.message).toBe('12 UNIMPLEMENTED: No message received');
      expect(got).toEqual(ref);
    });
    it('server stream, cancelled synchronously after the call is made', async () => {
      const run = async (c: DiffClientType) => {
        const o = fresh();
        const call = c.serverStream({ mode: 'ok', n: 3 }, new Metadata(), {});
        const done = record(call as unknown as EventSource, o, { stream: true });
        call.cancel();
        await done;
        // grpc-js may still emit `metadata` after `close`: the server's headers, when they were on
        // their way before the cancellation reached the server (a race, not a state of the call).
        // A mesh call cancelled before it began sent nothing: no headers can come.
        const last = o.events.indexOf('close');
        return { ...o, events: o.events.filter((e, i) => i <= last || e !== 'metadata') };
      };
      const [ref, got] = await both(run);
      expect(ref.error?.code).toBe(status.CANCELLED);
      expect(got).toEqual(ref);
    });
    it("client stream, cancelled from the second write's callback", async () => {
      const run = async (c: DiffClientType, kind: Kind) => {
        const id = newId();
        const o = fresh();
        const { cb, called } = callbackOf(o);
        const call = c.clientStream(new Metadata(), {}, cb);
        const done = record(call as unknown as EventSource, o, {
          stream: true,
          callback: called,
          awaitClose: false,
        });
        call.write({ mode: 'hold', id });
        call.write({}, () => call.cancel());
        await done;
        await seen.get(id)?.done;
        // grpc-js calls a write back once the message is on the HTTP/2 stream, so the server has
        // the call when it is cancelled; a mesh call keeps a stream's first messages for a replay
        // and calls each write back at once — documented: docs/semantics.md ("a streaming call's
        // messages"), docs/grpc.md — so whether the server saw the call before its cancellation is
        // a race there, and not compared.
        return kind === 'grpc-js' ? { ...o, serverCancelled: seen.get(id)?.cancelled } : o;
      };
      const [ref, got] = await both(run);
      expect(ref.error?.code).toBe(status.CANCELLED);
      expect((ref as { serverCancelled?: boolean }).serverCancelled).toBe(true);
      const { serverCancelled: _, ...caller } = ref as typeof ref & { serverCancelled?: boolean };
      expect(got).toEqual(caller);
    });
    it('bidi, cancelled after the first answer', async () => {
      const run = async (c: DiffClientType) => {
        const id = newId();
        const o = fresh();
        const call = c.bidi(new Metadata(), {});
        const done = record(call as unknown as EventSource, o, { stream: true, awaitClose: false });
        call.write({ mode: 'ok', id });
        call.once('data', () => call.cancel());
        await done;
        await seen.get(id)?.done;
        return { ...o, serverCancelled: seen.get(id)?.cancelled };
      };
      const [ref, got] = await both(run);
      expect(ref.error?.code).toBe(status.CANCELLED);
      expect(got).toEqual(ref);
    });
    it("bidi: a write after the server failed the call (its callback, the stream's events)", async () => {
      const run = async (c: DiffClientType) => {
        const o = fresh();
        const call = c.bidi(new Metadata(), {});
        const done = record(call as unknown as EventSource, o, { stream: true, awaitClose: false });
        call.write({ mode: 'fail', code: status.ABORTED });
        await done;
        const after = await new Promise<string>((resolve) => {
          const ok = call.write({ mode: 'ok' }, (e: unknown) =>
            resolve(e ? `callback(${String(e)})` : 'callback()'),
          );
          if (!ok) o.events.push('write returned false');
        });
        call.end();
        await new Promise<void>((resolve) => (call.closed ? resolve() : call.once('close', () => resolve())));
        return { ...o, after };
      };
      const [ref, got] = await both(run);
      expect(got).toEqual(ref);
    });
    it('bidi: writes still waiting (the server stopped reading) when the deadline ends the call', async () => {
      const run = async (c: DiffClientType) => {
        const o = fresh();
        const call = c.bidi(new Metadata(), { deadline: Date.now() + 300 });
        const done = record(call as unknown as EventSource, o, { stream: true, awaitClose: false });
        call.write({ mode: 'stall' });
        // 8 MB in 512 KiB messages: far past HTTP/2's windows and the mesh's replay buffer.
        const big = { mode: 'ok' as const, id: 'x'.repeat(512 * 1024) };
        const written = Array.from(
          { length: 16 },
          () => new Promise<boolean>((resolve) => call.write(big, () => resolve(true))),
        );
        await done;
        const calledBack = await Promise.all(written);
        return { ...eitherSidesDeadline(o), calledBack: calledBack.length };
      };
      const [ref, got] = await both(run);
      expect(ref.error?.code).toBe(status.DEADLINE_EXCEEDED);
      expect(got).toEqual(ref);
    });
    it('server stream: the deadline passes mid-stream', async () => {
      const run = async (c: DiffClientType) =>
        eitherSidesDeadline(await serverStream(c, { mode: 'hold', n: 2 }, { deadline: Date.now() + 200 }));
      const [ref, got] = await both(run);
      expect(ref.error?.code).toBe(status.DEADLINE_EXCEEDED);
      expect(got).toEqual(ref);
    });
    it('server stream: paused after the first message, resumed', async () => {
      const run = async (c: DiffClientType) => {
        const o = fresh();
        const call = c.serverStream({ mode: 'big', size: 10_000, n: 200 }, new Metadata(), {});
        const done = record(call as unknown as EventSource, o, { stream: true });
        call.once('data', () => {
          call.pause();
          setImmediate(() => setImmediate(() => call.resume()));
        });
        await done;
        return { ...o, messages: (o.messages as Res[]).map((m) => m.i) };
      };
      const [ref, got] = await both(run);
      expect(ref.messages).toHaveLength(200);
      expect(got).toEqual(ref);
    });
    it("response trailers larger than the client's grpc.max_metadata_size", async () => {
      const opts = { channelOptions: { 'grpc.max_metadata_size': 4096 } };
      const [ref, got] = await both(
        (c) => unaryCall(c, { mode: 'ok', trailerSize: 16_384 }),
        (k) => client(k, opts),
      );
      expect(got).toEqual(ref);
    });
    it('request metadata larger than the server accepts', async () => {
      const run = async (c: DiffClientType) => {
        const id = newId();
        const md = new Metadata();
        md.set('x-big', 'b'.repeat(64 * 1024));
        const o = await unaryCall(c, { mode: 'ok', id }, {}, md);
        return { ...o, serverSaw: seen.has(id) };
      };
      const [ref, got] = await both(run);
      expect(got).toEqual(ref);
    });
    it('call credentials that never answer: the deadline passes', async () => {
      const creds = CallCredentials.createFromMetadataGenerator(() => {});
      const [ref, got] = await both(async (c) =>
        withoutPhases(await unaryCall(c, { mode: 'ok' }, { credentials: creds, deadline: Date.now() + 200 })),
      );
      expect(ref.error?.code).toBe(status.DEADLINE_EXCEEDED);
      expect(got).toEqual(ref);
    });
  });

  describe('retries (gRFC A6)', () => {
    it('a retried call: grpc-previous-rpc-attempts to the server and in the response headers', async () => {
      // grpc-js retries with a service config's retryPolicy; a mesh client retries an idempotent
      // method (here named in idempotentMethods) — documented: retries (gRFC A6) within budget.
      const retryConfig = {
        'grpc.service_config': JSON.stringify({
          methodConfig: [
            {
              name: [{ service: 'diff.Diff', method: 'Unary' }],
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
      const make = (kind: Kind): DiffClientType => {
        const c =
          kind === 'grpc-js'
            ? new DiffClient(`127.0.0.1:${port}`, credentials.createInsecure(), retryConfig)
            : kind === 'mesh'
              ? createMeshClient(DiffClient, 'mesh:///diff', { idempotentMethods: ['/diff.Diff/Unary'] })
              : kind === 'mesh-options'
                ? new DiffClient(
                    'mesh:///diff',
                    credentials.createInsecure(),
                    meshClientOptions('mesh:///diff', { idempotentMethods: ['/diff.Diff/Unary'] }),
                  )
                : new DiffClient('mesh:///diff', credentials.createInsecure(), retryConfig);
        clients.push(c);
        return c as unknown as DiffClientType;
      };
      const run = async (c: DiffClientType, failures: number) => {
        const o = fresh();
        const { cb, called } = callbackOf(o);
        const call = c.unary({ mode: 'flaky', id: newId(), n: failures }, new Metadata(), {}, cb);
        let headers: unknown;
        (call as unknown as EventSource).on('metadata', (...a: unknown[]) => {
          headers = metadataRecord(a[0] as Metadata)?.['grpc-previous-rpc-attempts'];
        });
        await record(call as unknown as EventSource, o, { stream: false, callback: called });
        return { ...o, headers };
      };
      // The plain client on the mesh: target retries as grpc-js does, with the retryPolicy of its
      // grpc.service_config (the mesh resolver's service config keeps the channel's methodConfig).
      const [ref, got] = await both((c) => run(c, 1), make);
      expect(ref.response).toEqual({ i: 2, body: '1' });
      expect(ref.headers).toEqual(['1']);
      expect(got).toEqual(ref);
      // Every attempt fails (3 attempts, grpc-js's maxAttempts and the mesh's retry.attempts 2):
      // the trailers carry the count.
      const [refFail, gotFail] = await both((c) => run(c, 5), make);
      expect(refFail.status?.trailers).toMatchObject({ 'grpc-previous-rpc-attempts': ['2'] });
      expect(gotFail).toEqual(refFail);
    });
  });

  describe('deadlines', () => {
    const held = async (c: DiffClientType, deadline: Date | number) => {
      const id = newId();
      const o = await unaryCall(c, { mode: 'hold', id }, { deadline });
      const s = seen.get(id);
      if (s !== undefined) await s.done;
      return {
        ...eitherSidesDeadline(o),
        serverSaw: s === undefined ? 'nothing' : s.cancelled ? 'cancelled' : 'answered',
      };
    };
    it('a Date deadline, expiring while the server holds the call', async () => {
      const [ref, got] = await both((c) => held(c, new Date(Date.now() + 100)));
      expect(ref.error?.code).toBe(status.DEADLINE_EXCEEDED);
      expect(ref.error?.message).toBe('4 DEADLINE_EXCEEDED: Deadline exceeded');
      expect(ref.serverSaw).toBe('cancelled');
      expect(got).toEqual(ref);
    });
    it('a number deadline, expiring while the server holds the call', async () => {
      const [ref, got] = await both((c) => held(c, Date.now() + 100));
      expect(ref.error?.code).toBe(status.DEADLINE_EXCEEDED);
      expect(got).toEqual(ref);
    });
    it('a deadline that is not a time (NaN, an invalid Date, a string, -Infinity): as grpc-js', async () => {
      const run = async (c: DiffClientType, deadline: unknown) => {
        try {
          const o = await unaryCall(c, { mode: 'ok' }, { deadline: deadline as number });
          return { thrown: undefined, o: withoutPhases(o) };
        } catch (e) {
          return { thrown: `${(e as Error).name}: ${(e as Error).message}` };
        }
      };
      for (const deadline of ['soon', Number.NEGATIVE_INFINITY]) {
        const [ref, got] = await both((c) => run(c, deadline));
        expect(got, String(deadline)).toEqual(ref);
      }
      // NaN and an invalid Date: grpc-js answers them as a deadline that has passed
      // (DEADLINE_EXCEEDED), but its own call path (the raw client, and a plain client on the
      // mesh: target) also rejects a promise of its own on a connected channel, unhandled
      // ("Deadline is too far in the future", getDeadlineTimeoutString, grpc-js 1.14). So the mesh
      // clients are compared with grpc-js's answer to a deadline that has passed, and grpc-js's
      // own path is not run with them.
      const ref = await run(sharedClient('grpc-js'), Date.now() - 1);
      expect((ref.o as Observed | undefined)?.error?.code).toBe(status.DEADLINE_EXCEEDED);
      for (const deadline of [Number.NaN, new Date(Number.NaN)])
        for (const kind of ['mesh', 'mesh-options'] as const)
          expect(await run(sharedClient(kind), deadline), `${kind}, ${String(deadline)}`).toEqual(ref);
    });
    it('a deadline already passed when the call is made', async () => {
      const [ref, got] = await both((c) => held(c, Date.now() - 1_000));
      expect(ref.error?.code).toBe(status.DEADLINE_EXCEEDED);
      expect(ref.serverSaw).toBe('nothing');
      expect(got).toEqual(ref);
    });
  });

  describe('no endpoint ready (nothing listens on the port)', () => {
    let downPort = 0;
    let downMesh: Mesh | undefined;
    /** A port nothing listens on (bound, then closed). */
    const closedPort = async () => {
      const probe = createServer();
      const p = await new Promise<number>((resolve) =>
        probe.listen(0, '127.0.0.1', () => resolve((probe.address() as AddressInfo).port)),
      );
      await new Promise((r) => probe.close(r));
      return p;
    };
    beforeAll(async () => {
      downPort = await closedPort();
      downMesh = await meshFor({ down: { endpoints: [`127.0.0.1:${downPort}`] } });
    });
    afterAll(() => downMesh?.close());
    const downClient = (kind: Kind) => {
      const c =
        kind === 'grpc-js'
          ? new DiffClient(`127.0.0.1:${downPort}`, credentials.createInsecure())
          : meshed(kind, 'mesh:///down');
      clients.push(c);
      return c as unknown as DiffClientType;
    };
    it('without waitForReady: UNAVAILABLE "No connection established. Last error: …"', async () => {
      // Documented (docs/grpc.md "Per-call balancing"): grpc-js's words with the subchannel's
      // error, naming the endpoint for a mesh call and the service for a plain call on the mesh:
      // target (grpc-js ends them with its resolver's ". Resolution note: …").
      const ending = (o: Observed): Observed => {
        const cut = (t: string) =>
          t
            .replace(/( \(endpoint 127\.0\.0\.1:PORT\)|\. Resolution note: .*)$/, '')
            .replace(/^((?:\d+ UNAVAILABLE: )?)service "down": /, '$1');
        return JSON.parse(JSON.stringify(o, (_k, v) => (typeof v === 'string' ? cut(v) : v)));
      };
      const [ref, got] = await both(
        (c) => unaryCall(c, { mode: 'ok' }, { deadline: Date.now() + 5_000 }),
        downClient,
        (plain, reference) => {
          expect(plain.error?.details).toMatch(
            /^service "down": No connection established\. Last error: .*ECONNREFUSED/,
          );
          expect(ending(plain)).toEqual(ending(reference));
        },
      );
      expect(ref.error?.code).toBe(status.UNAVAILABLE);
      expect(got.error?.details).toMatch(
        /^No connection established\. Last error: .*ECONNREFUSED.* \(endpoint 127\.0\.0\.1:PORT\)$/,
      );
      expect(ending(got)).toEqual(ending(ref));
    });
    it('client.waitForReady(deadline, cb): fails at the deadline; the channel state', async () => {
      const run = async (c: DiffClientType) => {
        const err = await new Promise<Error | undefined>((resolve) =>
          c.waitForReady(Date.now() + 300, (e) => resolve(e)),
        );
        return { err: err?.message, state: connectivityState[c.getChannel().getConnectivityState(false)] };
      };
      const [ref, got] = await both(run, downClient);
      expect(ref.err).toBe('Failed to connect before the deadline');
      expect(got).toEqual(ref);
    });
    it('with waitForReady: the call waits (here until its deadline), not failed UNAVAILABLE', async () => {
      const [ref, got] = await both(async (c) => {
        const md = new Metadata({ waitForReady: true });
        return withoutPhases(await unaryCall(c, { mode: 'ok' }, { deadline: Date.now() + 300 }, md));
      }, downClient);
      expect(ref.error?.code).toBe(status.DEADLINE_EXCEEDED);
      expect(got).toEqual(ref);
    });
    it('with waitForReady: the call goes through once the server comes up', async () => {
      // A port and a mesh of its own per client: no channel of another test reconnects to it.
      const run = async (_c: DiffClientType, kind: Kind) => {
        const port = await closedPort();
        const m =
          kind === 'grpc-js' ? undefined : await meshFor({ late: { endpoints: [`127.0.0.1:${port}`] } });
        const c = (kind === 'grpc-js'
          ? new DiffClient(`127.0.0.1:${port}`, credentials.createInsecure())
          : meshed(kind, 'mesh:///late')) as unknown as DiffClientType;
        const channel = c.getChannel();
        const o = fresh();
        const { cb, called } = callbackOf(o);
        const md = new Metadata({ waitForReady: true });
        const call = c.unary({ mode: 'ok' }, md, { deadline: Date.now() + 15_000 }, cb);
        const done = record(call as unknown as EventSource, o, { stream: false, callback: called });
        // Once the channel failed to connect, a server comes up on the port.
        while (channel.getConnectivityState(false) !== connectivityState.TRANSIENT_FAILURE) {
          const from = channel.getConnectivityState(false);
          await new Promise((r) => channel.watchConnectivityState(from, Date.now() + 10_000, r));
        }
        const late = new Server();
        late.addService(serverDefinition, handlers as never);
        await new Promise<number>((resolve, reject) =>
          late.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (e, p) =>
            e ? reject(e) : resolve(p),
          ),
        );
        try {
          await done;
        } finally {
          c.close();
          await m?.close();
          late.forceShutdown();
        }
        return o;
      };
      const [ref, got] = await both(run, downClient);
      expect(ref.events).toEqual(['metadata', 'callback(response)', 'status OK']);
      expect(got).toEqual(ref);
    });
    it('with waitForReady, two endpoints: both calls go through once one of them comes up', async () => {
      // round_robin on both sides: the two calls are placed one on each endpoint; only the second
      // endpoint comes up, and the call waiting on the first must move there.
      const run = async (_c: DiffClientType, kind: Kind) => {
        const a = await closedPort();
        const b = await closedPort();
        const m =
          kind !== 'grpc-js'
            ? await meshFor({ late2: { endpoints: [`127.0.0.1:${a}`, `127.0.0.1:${b}`], lb: 'round_robin' } })
            : undefined;
        const c = (kind === 'grpc-js'
          ? new DiffClient(`ipv4:127.0.0.1:${a},127.0.0.1:${b}`, credentials.createInsecure(), {
              'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
            })
          : meshed(kind, 'mesh:///late2')) as unknown as DiffClientType;
        const channel = c.getChannel();
        const calls = [fresh(), fresh()].map((o) => {
          const { cb, called } = callbackOf(o);
          const md = new Metadata({ waitForReady: true });
          const call = c.unary({ mode: 'ok' }, md, { deadline: Date.now() + 15_000 }, cb);
          return { o, done: record(call as unknown as EventSource, o, { stream: false, callback: called }) };
        });
        while (channel.getConnectivityState(false) !== connectivityState.TRANSIENT_FAILURE) {
          const from = channel.getConnectivityState(false);
          await new Promise((r) => channel.watchConnectivityState(from, Date.now() + 10_000, r));
        }
        const late = new Server();
        late.addService(serverDefinition, handlers as never);
        await new Promise<number>((resolve, reject) =>
          late.bindAsync(`127.0.0.1:${b}`, ServerCredentials.createInsecure(), (e, p) =>
            e ? reject(e) : resolve(p),
          ),
        );
        try {
          await Promise.all(calls.map((x) => x.done));
        } finally {
          c.close();
          await m?.close();
          late.forceShutdown();
        }
        return calls.map((x) => x.o);
      };
      const [ref, got] = await both(run, downClient);
      expect(ref.map((o) => o.events)).toEqual([
        ['metadata', 'callback(response)', 'status OK'],
        ['metadata', 'callback(response)', 'status OK'],
      ]);
      expect(got).toEqual(ref);
    });
  });

  describe('call credentials', () => {
    it('a metadata generator that fails: the error as grpc-js words it', async () => {
      const creds = CallCredentials.createFromMetadataGenerator((_opts, cb) => cb(new Error('no token')));
      const [ref, got] = await both((c) => unaryCall(c, { mode: 'ok' }, { credentials: creds }));
      expect(ref.error).toBeDefined();
      expect(got).toEqual(ref);
    });
    it('a metadata generator that fails with a code', async () => {
      const creds = CallCredentials.createFromMetadataGenerator((_opts, cb) =>
        cb(Object.assign(new Error('denied'), { code: status.PERMISSION_DENIED })),
      );
      const [ref, got] = await both((c) => unaryCall(c, { mode: 'ok' }, { credentials: creds }));
      expect(got).toEqual(ref);
    });
  });

  describe('message size limits', () => {
    it('a response over grpc.max_receive_message_length: RESOURCE_EXHAUSTED', async () => {
      const opts = { channelOptions: { 'grpc.max_receive_message_length': 1024 } };
      const [ref, got] = await both(
        (c) => unaryCall(c, { mode: 'big', size: 4096 }),
        (k) => client(k, opts),
      );
      expect(ref.error?.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(got).toEqual(ref);
    });
    it('a request over grpc.max_send_message_length: RESOURCE_EXHAUSTED', async () => {
      const opts = { channelOptions: { 'grpc.max_send_message_length': 1024 } };
      // The caller's message: a mesh call does not try it again (grpc-js sends it once, too).
      const retries: unknown[] = [];
      const off = mesh.events.on('retry', (e) => retries.push(e));
      try {
        const [ref, got] = await both(
          (c) => unaryCall(c, { mode: 'ok', id: 'x'.repeat(4096) }),
          (k) => client(k, opts),
        );
        expect(ref.error?.code).toBe(status.RESOURCE_EXHAUSTED);
        expect(got).toEqual(ref);
      } finally {
        off();
      }
      expect(retries).toEqual([]);
    });
  });

  describe('the client', () => {
    it('a call after client.close() throws where it is made, even when another client shares the channel', async () => {
      const run = async (c: DiffClientType, kind: Kind) => {
        const other = client(kind); // a second client of the same target (mesh: the same pooled channel)
        await unaryCall(other, { mode: 'ok' });
        c.close();
        let thrown: string | undefined;
        try {
          c.unary({ mode: 'ok' }, new Metadata(), {}, () => {});
        } catch (e) {
          thrown = (e as Error).message;
        }
        const state = c.getChannel().getConnectivityState(false);
        const otherStill = (await unaryCall(other, { mode: 'ok' })).events;
        return { thrown, state: connectivityState[state], otherStill };
      };
      const [ref, got] = await both(run, (k) => client(k));
      expect(ref.thrown).toBe('Channel has been shut down');
      expect(got).toEqual(ref);
    });

    it('waitForReady(deadline, cb) on the client and the channel state once ready', async () => {
      const run = async (c: DiffClientType) => {
        const err = await new Promise<Error | undefined>((resolve) =>
          c.waitForReady(Date.now() + 5_000, (e) => resolve(e)),
        );
        return { err: err?.message, state: connectivityState[c.getChannel().getConnectivityState(false)] };
      };
      const [ref, got] = await both(run, (k) => client(k));
      expect(ref).toEqual({ err: undefined, state: 'READY' });
      expect(got).toEqual(ref);
    });
  });

  describe("the caller's interceptors", () => {
    it('client interceptors see one logical call, with its metadata and status', async () => {
      const run = async (c: DiffClientType, log: string[]) => {
        await unaryCall(c, { mode: 'fail', code: status.UNAVAILABLE });
        return log;
      };
      const logging =
        (log: string[]): Interceptor =>
        (options, nextCall) =>
          new InterceptingCall(nextCall(options), {
            start(md, _listener, next) {
              log.push(`start ${options.method_definition.path}`);
              next(md, {
                onReceiveMetadata(m, n) {
                  log.push('metadata');
                  n(m);
                },
                onReceiveMessage(m, n) {
                  log.push('message');
                  n(m);
                },
                onReceiveStatus(s, n) {
                  log.push(`status ${status[s.code]}`);
                  n(s);
                },
              });
            },
          });
      const logs: Record<Kind, string[]> = { 'grpc-js': [], mesh: [], 'mesh-options': [], 'mesh-target': [] };
      const [ref, got] = await both(
        (c, kind) => run(c, logs[kind]),
        (k) => client(k, { interceptors: [logging(logs[k])] }),
      );
      // grpc-js's unary call hands its listeners a null message before a status without one.
      expect(ref).toEqual(['start /diff.Diff/Unary', 'message', 'status UNAVAILABLE']);
      expect(got).toEqual(ref);
    });

    it('interceptor_providers beside meshClientOptions (spread into the client options)', async () => {
      const run = async (c: DiffClientType, log: string[]) => {
        await unaryCall(c, { mode: 'ok' });
        return log;
      };
      const provider = (log: string[]) => (def: { path: string }) => {
        log.push(`provided for ${def.path}`);
        return (options: Parameters<Interceptor>[0], nextCall: Parameters<Interceptor>[1]) =>
          new InterceptingCall(nextCall(options));
      };
      const refLog: string[] = [];
      const gotLog: string[] = [];
      const raw = new DiffClient(`127.0.0.1:${port}`, credentials.createInsecure(), {
        interceptor_providers: [provider(refLog)],
      });
      const meshOpts = new DiffClient('mesh:///diff', credentials.createInsecure(), {
        ...meshClientOptions('mesh:///diff'),
        interceptor_providers: [provider(gotLog)],
      });
      clients.push(raw, meshOpts);
      const ref = await run(raw as unknown as DiffClientType, refLog);
      const got = await run(meshOpts as unknown as DiffClientType, gotLog);
      expect(ref).toEqual(['provided for /diff.Diff/Unary']);
      expect(got).toEqual(ref);
    });

    it('per-call interceptors (CallOptions.interceptors), which replace the client ones', async () => {
      const logs: Record<Kind, string[]> = { 'grpc-js': [], mesh: [], 'mesh-options': [], 'mesh-target': [] };
      const perCall =
        (log: string[]): Interceptor =>
        (options, nextCall) => {
          log.push(`per-call ${options.method_definition.path}`);
          return new InterceptingCall(nextCall(options));
        };
      const [ref, got] = await both(async (c, kind) => {
        const o = await unaryCall(c, { mode: 'ok' }, { interceptors: [perCall(logs[kind])] });
        const st = await serverStream(c, { mode: 'ok', n: 2 }, { interceptors: [perCall(logs[kind])] });
        return { o, st, log: logs[kind] };
      });
      expect(ref.log).toEqual(['per-call /diff.Diff/Unary', 'per-call /diff.Diff/ServerStream']);
      expect(got).toEqual(ref);
    });
  });
});

import {
  Metadata,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceError,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import { spiffeIdOfCertificate } from '../../packages/grpc/src/index.js';
import {
  type Empty,
  idempotentServiceDefinition,
  type SimpleRequest,
  type SimpleResponse,
  type StreamingInputCallRequest,
  type StreamingInputCallResponse,
  type StreamingOutputCallRequest,
  type StreamingOutputCallResponse,
  testServiceDefinition,
  zeros,
} from './interop-proto.js';
import { deferred, delay, type MetadataRecord, metadataRecord } from './observe.js';
import { TcpRelay } from './tcp-relay.js';

/** Interop metadata keys ("Echo Metadata"). */
export const ECHO_INITIAL = 'x-grpc-test-echo-initial';
export const ECHO_TRAILING = 'x-grpc-test-echo-trailing-bin';

/**
 * Metadata keys of this suite (not of the interop spec): the call id the server files its
 * observations under, and instructions for the server-side behaviours the extra cases need.
 */
export const CALL_ID = 'x-conformance-call';
export const Control = {
  /** After processing the request (unary: at once; client streaming: at half-close), reset the connection instead of answering. */
  dropConnection: 'x-conformance-drop-connection',
  /** Client streaming: after half-close, count the call as processed and end it with this status code. */
  failWith: 'x-conformance-fail-with',
  /** Never answer: wait until the call is cancelled or its deadline passes. */
  hold: 'x-conformance-hold',
  /** Unary: send the response headers, then answer only once the client said it saw them (`release`). */
  awaitRelease: 'x-conformance-await-release',
} as const;

/** How long a held call waits at most when it has no deadline (ms). */
const HOLD_MAX_MS = 3_000;
/**
 * How long an `awaitRelease` call waits for the client before answering anyway (ms): a client
 * that delivers the headers only with the status makes the server wait this long.
 */
const RELEASE_WAIT_MS = 1_000;

/** What the server saw of one execution of a handler. */
export interface Execution {
  readonly method: string;
  /** The request metadata as the handler got it (without the call id). */
  readonly metadata: MetadataRecord;
  /** The deadline the server enforces (ms since the epoch), Infinity without one. */
  readonly deadline: number;
  /** The client's SPIFFE ID when it presented a certificate. */
  readonly peerIdentity: string | undefined;
  /** Request messages received. */
  messages: number;
  /** The handler sent a status. */
  answered: boolean;
  /** grpc-js told the handler the call was cancelled (client cancel, deadline, connection loss). */
  cancelled: boolean;
  /** `awaitRelease` calls: whether the client's release or the server's patience ended the wait. */
  releasedBy: 'client' | 'timeout' | undefined;
  /** Resolves once the handler answered or the call was cancelled. */
  readonly settled: Promise<void>;
}

interface ExecutionState extends Execution {
  settle(): void;
}

type AnyServerCall =
  | ServerUnaryCall<unknown, unknown>
  | ServerReadableStream<unknown, unknown>
  | ServerWritableStream<unknown, unknown>
  | ServerDuplexStream<unknown, unknown>;

function deadlineOf(call: AnyServerCall): number {
  const d = call.getDeadline();
  return d instanceof Date ? d.getTime() : d;
}

function echoTrailer(call: AnyServerCall): Metadata {
  const md = new Metadata();
  for (const v of call.metadata.get(ECHO_TRAILING)) md.add(ECHO_TRAILING, v);
  return md;
}

/** "Echo Metadata": the initial echo key goes back at once, in the response headers. */
function echoInitial(call: AnyServerCall): void {
  const v = call.metadata.get(ECHO_INITIAL);
  if (v.length === 0) return;
  const md = new Metadata();
  for (const x of v) md.add(ECHO_INITIAL, x);
  call.sendMetadata(md);
}

function control(call: AnyServerCall, key: string): string | undefined {
  const v = call.metadata.get(key)[0];
  return v === undefined ? undefined : String(v);
}

function statusError(code: number, details: string, metadata: Metadata): Partial<ServiceError> {
  return { code, details, metadata };
}

async function write<T>(call: ServerWritableStream<unknown, T> | ServerDuplexStream<unknown, T>, msg: T) {
  if (!call.write(msg)) await new Promise<void>((resolve) => call.once('drain', () => resolve()));
}

export interface InteropServerOptions {
  /** mTLS: the server's certificate and key, and the CA its clients' certificates must chain to. */
  readonly tls?: { readonly ca: Buffer; readonly cert: Buffer; readonly key: Buffer } | undefined;
}

/**
 * The interop server: a plain grpc-js `Server` (no meshlet) implementing `grpc.testing.TestService`
 * as doc/interop-test-descriptions.md describes its features (EmptyCall, UnaryCall,
 * StreamingInputCall, StreamingOutputCall, FullDuplexCall, Echo Status, Echo Metadata,
 * CompressedRequest, interval_us, Echo Authenticated Username as the client certificate's SPIFFE
 * ID), plus meshlet's `IdempotentService`. `UnimplementedCall` and `UnimplementedService` are not
 * implemented. It listens on 127.0.0.1 port 0, behind a `TcpRelay`, and files what each handler
 * execution saw under the call's `x-conformance-call` id.
 */
export class InteropServer {
  readonly server: Server;
  readonly relay: TcpRelay;
  readonly port: number;
  readonly #executions = new Map<string, ExecutionState[]>();
  readonly #releases = new Map<string, () => void>();
  readonly #startWaiters = new Map<string, Array<() => void>>();
  /** `relay.upstreamBytes` when the current call started (see `markWire`). */
  #wireMark = 0;

  private constructor(server: Server, port: number, relay: TcpRelay) {
    this.server = server;
    this.port = port;
    this.relay = relay;
  }

  static async start(options: InteropServerOptions = {}): Promise<InteropServer> {
    const server = new Server();
    const creds = options.tls
      ? ServerCredentials.createSsl(
          options.tls.ca,
          [{ private_key: options.tls.key, cert_chain: options.tls.cert }],
          true,
        )
      : ServerCredentials.createInsecure();
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
    const relay = await TcpRelay.start(port);
    const s = new InteropServer(server, port, relay);
    s.#register();
    return s;
  }

  /** The address clients dial (the relay's). */
  get address(): string {
    return this.relay.address;
  }

  /** The handler executions of call `id` so far. */
  executions(id: string): readonly Execution[] {
    return this.#executions.get(id) ?? [];
  }

  /** Waits until every execution of call `id` answered or was cancelled (at most `ms`). */
  async settled(id: string, ms = 2_000): Promise<readonly Execution[]> {
    const list = this.executions(id);
    await Promise.race([Promise.all(list.map((e) => e.settled)), delay(ms)]);
    return list;
  }

  /** Resolves when a handler execution of call `id` has started (at most `ms`). */
  async whenStarted(id: string, ms = 2_000): Promise<void> {
    if (this.executions(id).length > 0) return;
    const started = deferred();
    const list = this.#startWaiters.get(id) ?? [];
    list.push(started.resolve);
    this.#startWaiters.set(id, list);
    await Promise.race([started.promise, delay(ms)]);
  }

  /** Lets an `awaitRelease` call of `id` answer (the client saw its response headers). */
  release(id: string): void {
    this.#releases.get(id)?.();
  }

  /** Starts counting request bytes on the wire for the next call (CompressedRequest). */
  markWire(): void {
    this.#wireMark = this.relay.upstreamBytes;
  }

  /** Request bytes on the wire since the last mark; moves the mark. */
  #wireSinceMark(): number {
    const n = this.relay.upstreamBytes - this.#wireMark;
    this.#wireMark = this.relay.upstreamBytes;
    return n;
  }

  /** Whether a request message whose body is `bodyLength` bytes crossed the wire compressed. */
  #arrivedCompressed(bodyLength: number): boolean {
    return this.#wireSinceMark() < bodyLength / 2;
  }

  async close(): Promise<void> {
    this.server.forceShutdown();
    await this.relay.close();
  }

  #begin(method: string, call: AnyServerCall): ExecutionState {
    const id = control(call, CALL_ID) ?? '';
    const md = metadataRecord(call.metadata) ?? {};
    delete md[CALL_ID];
    const cert = call.getAuthContext().sslPeerCertificate;
    const done = deferred();
    let settledOnce = false;
    const state: ExecutionState = {
      method,
      metadata: md,
      deadline: deadlineOf(call),
      peerIdentity: cert === undefined ? undefined : spiffeIdOfCertificate(cert),
      messages: 0,
      answered: false,
      cancelled: false,
      releasedBy: undefined,
      settled: done.promise,
      settle() {
        if (settledOnce) return;
        settledOnce = true;
        done.resolve();
      },
    };
    (call as NodeJS.EventEmitter).on('cancelled', () => {
      // grpc-js also emits 'cancelled' after the handler's own status went out; only an end
      // before an answer is a cancellation (client cancel, deadline, lost connection).
      if (!state.answered) state.cancelled = true;
      state.settle();
    });
    let list = this.#executions.get(id);
    if (list === undefined) {
      list = [];
      this.#executions.set(id, list);
    }
    list.push(state);
    const waiters = this.#startWaiters.get(id);
    if (waiters !== undefined) {
      this.#startWaiters.delete(id);
      for (const w of waiters) w();
    }
    return state;
  }

  /** Waits until the call is cancelled or its deadline (or HOLD_MAX_MS) passed. */
  async #hold(state: ExecutionState): Promise<void> {
    const until = Number.isFinite(state.deadline) ? state.deadline - Date.now() + 100 : HOLD_MAX_MS;
    await Promise.race([state.settled, delay(Math.max(0, until))]);
  }

  #answer(state: ExecutionState): void {
    state.answered = true;
    state.settle();
  }

  #register(): void {
    this.server.addService(testServiceDefinition, {
      EmptyCall: (call: ServerUnaryCall<Empty, Empty>, cb: sendUnaryData<Empty>) => {
        const state = this.#begin('EmptyCall', call);
        state.messages = 1;
        echoInitial(call);
        this.#answer(state);
        cb(null, {}, echoTrailer(call));
      },
      UnaryCall: (call: ServerUnaryCall<SimpleRequest, SimpleResponse>, cb: sendUnaryData<SimpleResponse>) =>
        void this.#unary('UnaryCall', call, cb),
      StreamingInputCall: (
        call: ServerReadableStream<StreamingInputCallRequest, StreamingInputCallResponse>,
        cb: sendUnaryData<StreamingInputCallResponse>,
      ) => this.#streamingInput(call, cb),
      StreamingOutputCall: (
        call: ServerWritableStream<StreamingOutputCallRequest, StreamingOutputCallResponse>,
      ) => void this.#streamingOutput(call),
      FullDuplexCall: (call: ServerDuplexStream<StreamingOutputCallRequest, StreamingOutputCallResponse>) =>
        this.#fullDuplex(call),
    });
    this.server.addService(idempotentServiceDefinition, {
      IdempotentUnaryCall: (
        call: ServerUnaryCall<SimpleRequest, SimpleResponse>,
        cb: sendUnaryData<SimpleResponse>,
      ) => void this.#unary('IdempotentUnaryCall', call, cb),
    });
  }

  async #unary(
    method: string,
    call: ServerUnaryCall<SimpleRequest, SimpleResponse>,
    cb: sendUnaryData<SimpleResponse>,
  ): Promise<void> {
    const state = this.#begin(method, call);
    state.messages = 1;
    const req = call.request;
    const body = req.payload?.body ?? Buffer.alloc(0);
    const compressed = this.#arrivedCompressed(body.length);
    echoInitial(call);
    if (control(call, Control.dropConnection) !== undefined) {
      // Processed; then the connection dies before the answer.
      this.relay.dropConnections();
      return;
    }
    if (control(call, Control.hold) !== undefined) {
      await this.#hold(state);
      if (!state.cancelled) {
        this.#answer(state);
        cb(null, {});
      }
      return;
    }
    const id = control(call, CALL_ID) ?? '';
    if (control(call, Control.awaitRelease) !== undefined) {
      const released = deferred<'client'>();
      this.#releases.set(id, () => released.resolve('client'));
      state.releasedBy = await Promise.race([
        released.promise,
        delay(RELEASE_WAIT_MS).then(() => 'timeout' as const),
      ]);
      this.#releases.delete(id);
    }
    if (req.expect_compressed?.value === true && !compressed) {
      this.#answer(state);
      cb(statusError(status.INVALID_ARGUMENT, 'expected a compressed request', echoTrailer(call)));
      return;
    }
    if (req.response_status) {
      this.#answer(state);
      cb(
        statusError(
          req.response_status.code ?? status.UNKNOWN,
          req.response_status.message ?? '',
          echoTrailer(call),
        ),
      );
      return;
    }
    const response: SimpleResponse = {
      payload: { type: 'COMPRESSABLE', body: zeros(req.response_size ?? 0) },
    };
    if (req.fill_username) response.username = state.peerIdentity ?? '';
    this.#answer(state);
    cb(null, response, echoTrailer(call));
  }

  #streamingInput(
    call: ServerReadableStream<StreamingInputCallRequest, StreamingInputCallResponse>,
    cb: sendUnaryData<StreamingInputCallResponse>,
  ): void {
    const state = this.#begin('StreamingInputCall', call);
    echoInitial(call);
    let total = 0;
    let failed = false;
    call.on('data', (msg: StreamingInputCallRequest) => {
      state.messages++;
      const body = msg.payload?.body ?? Buffer.alloc(0);
      const compressed = this.#arrivedCompressed(body.length);
      if (failed) return;
      if (msg.expect_compressed?.value === true && !compressed) {
        failed = true;
        this.#answer(state);
        cb(statusError(status.INVALID_ARGUMENT, 'expected a compressed request', echoTrailer(call)));
        return;
      }
      total += body.length;
    });
    call.on('end', () => setImmediate(() => onEnd()));
    const onEnd = () => {
      if (failed || state.cancelled) return;
      if (control(call, Control.dropConnection) !== undefined) {
        this.relay.dropConnections();
        return;
      }
      if (control(call, Control.hold) !== undefined) return;
      const failWith = control(call, Control.failWith);
      this.#answer(state);
      if (failWith !== undefined) {
        cb(statusError(Number(failWith), 'processed, then failed', echoTrailer(call)));
        return;
      }
      cb(null, { aggregated_payload_size: total }, echoTrailer(call));
    };
  }

  async #streamingOutput(
    call: ServerWritableStream<StreamingOutputCallRequest, StreamingOutputCallResponse>,
  ): Promise<void> {
    const state = this.#begin('StreamingOutputCall', call);
    state.messages = 1;
    echoInitial(call);
    const req = call.request;
    if (control(call, Control.hold) !== undefined) {
      await this.#hold(state);
      if (!state.cancelled) {
        this.#answer(state);
        call.end();
      }
      return;
    }
    if (req.response_status) {
      this.#answer(state);
      call.emit(
        'error',
        statusError(
          req.response_status.code ?? status.UNKNOWN,
          req.response_status.message ?? '',
          echoTrailer(call),
        ),
      );
      return;
    }
    for (const p of req.response_parameters ?? []) {
      // "Observe ResponseParameters.interval_us": a sleep before each response.
      if ((p.interval_us ?? 0) > 0) await delay((p.interval_us ?? 0) / 1000);
      if (state.cancelled) return;
      await write(call, { payload: { type: 'COMPRESSABLE', body: zeros(p.size ?? 0) } });
    }
    this.#answer(state);
    call.end(echoTrailer(call));
  }

  #fullDuplex(call: ServerDuplexStream<StreamingOutputCallRequest, StreamingOutputCallResponse>): void {
    const state = this.#begin('FullDuplexCall', call);
    echoInitial(call);
    // Responses go out in order, each after its interval_us (accumulating).
    let queue: Promise<void> = Promise.resolve();
    /** A status was asked for: later messages are not processed ("Echo Status"). */
    let ignoring = false;
    /** The status was sent. */
    let ended = false;
    call.on('data', (msg: StreamingOutputCallRequest) => {
      state.messages++;
      if (ignoring) return;
      const st = msg.response_status;
      if (st) {
        ignoring = true;
        queue = queue.then(() => {
          ended = true;
          this.#answer(state);
          call.emit('error', statusError(st.code ?? status.UNKNOWN, st.message ?? '', echoTrailer(call)));
        });
        return;
      }
      for (const p of msg.response_parameters ?? []) {
        queue = queue.then(async () => {
          if ((p.interval_us ?? 0) > 0) await delay((p.interval_us ?? 0) / 1000);
          if (state.cancelled || ended) return;
          await write(call, { payload: { type: 'COMPRESSABLE', body: zeros(p.size ?? 0) } });
        });
      }
    });
    call.on('end', () => {
      // A client's RST_STREAM reaches the handler as the end of the request stream first and as
      // 'cancelled' a moment later; answer only what is still a call after I/O settled.
      queue = queue.then(() => new Promise<void>((resolve) => setImmediate(resolve)));
      queue = queue.then(() => {
        if (ended || state.cancelled) return;
        ended = true;
        this.#answer(state);
        call.end(echoTrailer(call));
      });
    });
  }
}

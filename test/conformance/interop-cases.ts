import { type ClientWritableStream, type Metadata, status } from '@grpc/grpc-js';
import { expect, vi } from 'vitest';
import {
  type CallView,
  CLIENT_IDENTITY,
  type ClientKind,
  type Clients,
  callMetadata,
  clientStream,
  collect,
  OTHER_IDENTITY,
  payloadView,
  type ServerView,
  type StreamView,
  serverView,
  type UnaryControl,
  type UnaryView,
  unary,
} from './harness.js';
import {
  type SimpleRequest,
  type SimpleResponse,
  type StreamingInputCallRequest,
  type StreamingInputCallResponse,
  type StreamingOutputCallRequest,
  type StreamingOutputCallResponse,
  type TestServiceClient,
  zeros,
} from './interop-proto.js';
import { Control, ECHO_INITIAL, ECHO_TRAILING, type InteropServer } from './interop-server.js';

/** What a case runs against. */
export interface CaseContext {
  readonly kind: ClientKind;
  readonly clients: Clients;
  readonly server: InteropServer;
  /** The mTLS matrix. */
  readonly tls: boolean;
}

/**
 * One interop case. `run` makes the calls and returns what the client and the server saw, as plain
 * data; `spec` asserts what the interop spec (or gRFC A6, or issue 13) says; and every meshed
 * client's observation must equal the reference's (raw grpc-js) field by field.
 */
export interface InteropCase {
  readonly name: string;
  /** Where the expectations come from. */
  readonly source: string;
  /** Run only in this matrix. */
  readonly only?: 'mtls';
  /** mTLS: the identity the clients expect of the server (default: the server's own). */
  readonly serverIdentity?: string;
  /**
   * The case's calls all succeed (or end as the caller wanted) and leave no state behind, so it
   * may run on clients (and a mesh) shared with other such cases; every other case gets fresh
   * clients and a fresh mesh, so that what one case does to the breaker, the retry budget or a
   * connection cannot change another's result.
   */
  readonly reuse?: boolean;
  run(ctx: CaseContext): Promise<unknown>;
  spec(observation: never, ctx: CaseContext): void;
  /**
   * What of an observation must equal the reference's (default: all of it). Only cases whose
   * difference is a documented mesh feature narrow it, and say which feature.
   */
  compare?(observation: never): unknown;
}

function defineCase<O>(c: {
  name: string;
  source: string;
  only?: 'mtls';
  serverIdentity?: string;
  reuse?: boolean;
  run(ctx: CaseContext): Promise<O>;
  spec(observation: O, ctx: CaseContext): void;
  compare?(observation: O): unknown;
}): InteropCase {
  return c as InteropCase;
}

const SPEC = 'interop-test-descriptions.md';
const A6 = 'gRFC A6 (commit on response headers) / issue 13';
const ISSUE = 'issue 13';
const SEMANTICS = 'DESIGN.md failure semantics / issue 13';

// ---------------------------------------------------------------------------------------------
// Making calls, and reducing what was seen to comparable data
// ---------------------------------------------------------------------------------------------

/** A client's view without `getPeer()` values (compared only by the getPeer case). */
type Seen<V extends CallView> = Omit<V, 'peerAtMetadata' | 'peerAtStatus'>;
function seen<V extends CallView>(v: V): Seen<V> {
  const { peerAtMetadata: _m, peerAtStatus: _s, ...rest } = v;
  return rest;
}

/** A unary call's view with its SimpleResponse payload reduced to size and zeros. */
function simple(v: UnaryView<SimpleResponse>) {
  const { response, ...rest } = seen(v);
  return {
    ...rest,
    response:
      response === undefined
        ? undefined
        : { payload: payloadView(response.payload), username: response.username ?? '' },
  };
}

function payloads(m: StreamingOutputCallResponse) {
  return payloadView(m.payload);
}

/** Sizes of a stream's payloads, and whether all were zeros. */
function sizes(v: StreamView<ReturnType<typeof payloads>>) {
  const { messages, ...rest } = seen(v);
  return {
    ...rest,
    sizes: messages.map((m) => m?.size ?? -1),
    zeros: messages.every((m) => m?.zeros === true),
    types: [...new Set(messages.map((m) => m?.type))],
  };
}

async function settledView(server: InteropServer, id: string, clientDeadline?: number): Promise<ServerView> {
  return serverView(await server.settled(id), clientDeadline);
}

/** Writes `messages` to a client stream, respecting back-pressure, then half-closes. */
async function writeAll<T>(
  call: { write(m: T): boolean; end(): void; once(e: 'drain', f: () => void): unknown },
  messages: Iterable<T>,
): Promise<void> {
  for (const m of messages) {
    if (!call.write(m)) await new Promise<void>((resolve) => call.once('drain', () => resolve()));
  }
  call.end();
}

function* repeat<T>(n: number, make: (i: number) => T): Iterable<T> {
  for (let i = 0; i < n; i++) yield make(i);
}

interface UnaryCallOptions {
  /** Request metadata besides the call id. */
  readonly extra?: Record<string, string | Buffer>;
  readonly deadline?: number;
  /** The TestService client to use (default `clients.test`). */
  readonly client?: TestServiceClient;
  /** Call `IdempotentService.IdempotentUnaryCall` instead of `TestService.UnaryCall`. */
  readonly idempotent?: boolean;
  readonly control?: (id: string) => UnaryControl;
}

/** A UnaryCall: what the client and the server saw. */
async function unaryCall({ clients, server }: CaseContext, req: SimpleRequest, o: UnaryCallOptions = {}) {
  const { id, md } = callMetadata(o.extra);
  const client = o.client ?? clients.test;
  const method = o.idempotent
    ? clients.idempotent.IdempotentUnaryCall.bind(clients.idempotent)
    : client.UnaryCall.bind(client);
  const opts = o.deadline === undefined ? {} : { deadline: o.deadline };
  const view = await unary(method, req, md, opts, o.control?.(id));
  return { call: simple(view), server: await settledView(server, id, o.deadline) };
}

/** A StreamingInputCall on `client`; `drive` writes to it. */
function inputStream(
  client: TestServiceClient,
  md: Metadata,
  drive: (call: ClientWritableStream<StreamingInputCallRequest>) => Promise<void>,
): Promise<UnaryView<StreamingInputCallResponse>> {
  return clientStream((cb) => client.StreamingInputCall(md, {}, cb), drive);
}

/** A StreamingInputCall writing `messages`: what the client and the server saw. */
async function inputCall(
  { clients, server }: CaseContext,
  messages: Iterable<StreamingInputCallRequest>,
  o: { extra?: Record<string, string>; client?: TestServiceClient } = {},
) {
  const { id, md } = callMetadata(o.extra);
  const view = await inputStream(o.client ?? clients.test, md, (call) => writeAll(call, messages));
  return { call: seen(view), server: await settledView(server, id) };
}

/** A FullDuplexCall writing `messages`, then half-closing: what the client and the server saw. */
async function duplexCall(
  { clients, server }: CaseContext,
  messages: Iterable<StreamingOutputCallRequest>,
  extra: Record<string, string | Buffer> = {},
) {
  const { id, md } = callMetadata(extra);
  const call = clients.test.FullDuplexCall(md, {});
  const view = collect(call, payloads);
  await writeAll(call, messages);
  return { call: sizes(await view), server: await settledView(server, id) };
}

/** A StreamingOutputCall: what the client and the server saw. */
async function outputCall(
  { clients, server }: CaseContext,
  req: StreamingOutputCallRequest,
  o: { extra?: Record<string, string>; deadline?: number } = {},
) {
  const { id, md } = callMetadata(o.extra);
  const opts = o.deadline === undefined ? {} : { deadline: o.deadline };
  const view = await collect(clients.test.StreamingOutputCall(req, md, opts), payloads);
  return { call: sizes(view), server: await settledView(server, id, o.deadline) };
}

const LARGE_REQUEST = 271_828;
const LARGE_RESPONSE = 314_159;
const LARGE = { response_size: LARGE_RESPONSE, payload: { body: zeros(LARGE_REQUEST) } };
const FOUR_MB = 4_000_000;
const TEN_THOUSAND = 10_000;
const SPECIAL_MESSAGE = '\t\ntest with whitespace\r\nand Unicode BMP \u263A and non-BMP \u{1F608}\t\n';
const ECHO_VALUE = 'test_initial_metadata_value';
const ECHO_BIN = Buffer.from([0xab, 0xab, 0xab]);
const PROCESSED_THEN_UNAVAILABLE = { code: status.UNAVAILABLE, message: 'processed, then unavailable' };
/**
 * Long enough for a call to reach the server's handler before it expires even on a loaded
 * machine; the calls of a case wait in parallel.
 */
const DEADLINE_MS = 300;

// ---------------------------------------------------------------------------------------------
// The interop test cases (doc/interop-test-descriptions.md)
// ---------------------------------------------------------------------------------------------

const emptyUnary = defineCase({
  name: 'empty_unary',
  source: SPEC,
  reuse: true,
  async run({ clients, server }) {
    const { id, md } = callMetadata();
    const call = await unary(clients.test.EmptyCall.bind(clients.test), {}, md);
    return { call: seen(call), server: await settledView(server, id) };
  },
  spec({ call, server }) {
    expect(call.code).toBe(status.OK);
    expect(call.response).toEqual({});
    expect(server.executions).toBe(1);
  },
});

const largeUnary = defineCase({
  name: 'large_unary',
  source: SPEC,
  reuse: true,
  run: (ctx) => unaryCall(ctx, LARGE),
  spec({ call, server }) {
    expect(call.code).toBe(status.OK);
    expect(call.response?.payload).toEqual({ type: 'COMPRESSABLE', size: LARGE_RESPONSE, zeros: true });
    expect(server.executions).toBe(1);
  },
});

const clientCompressedUnary = defineCase({
  name: 'client_compressed_unary',
  source: `${SPEC} (grpc-js compresses per channel: grpc.default_compression_algorithm)`,
  reuse: true,
  async run(ctx) {
    const { clients, server } = ctx;
    const views = [];
    // 1. the feature probe, uncompressed; 2. compressed; 3. uncompressed, not expected compressed.
    for (const [client, expectCompressed] of [
      [clients.test, true],
      [clients.compressed, true],
      [clients.test, false],
    ] as const) {
      server.markWire();
      views.push(
        await unaryCall(ctx, { ...LARGE, expect_compressed: { value: expectCompressed } }, { client }),
      );
    }
    return views;
  },
  spec([probe, compressed, plain]) {
    expect(probe?.call.code).toBe(status.INVALID_ARGUMENT);
    for (const v of [compressed, plain]) {
      expect(v?.call.code).toBe(status.OK);
      expect(v?.call.response?.payload?.size).toBe(LARGE_RESPONSE);
    }
  },
});

const clientCompressedStreaming = defineCase({
  name: 'client_compressed_streaming',
  source: `${SPEC} (grpc-js cannot leave one message of a compressing stream uncompressed: its write flags are refused by Node's Writable, so both messages go compressed; the server requires compression of the first only)`,
  reuse: true,
  async run(ctx) {
    ctx.server.markWire();
    const probe = await inputCall(ctx, [
      { expect_compressed: { value: true }, payload: { body: zeros(27_182) } },
    ]);
    ctx.server.markWire();
    const compressed = await inputCall(
      ctx,
      [
        { expect_compressed: { value: true }, payload: { body: zeros(27_182) } },
        { expect_compressed: { value: false }, payload: { body: zeros(45_904) } },
      ],
      { client: ctx.clients.compressed },
    );
    return { probe, compressed };
  },
  spec({ probe, compressed }) {
    expect(probe.call.code).toBe(status.INVALID_ARGUMENT);
    expect(compressed.call.code).toBe(status.OK);
    expect(compressed.call.response?.aggregated_payload_size).toBe(73_086);
  },
});

const clientStreaming = defineCase({
  name: 'client_streaming',
  source: SPEC,
  reuse: true,
  run: (ctx) =>
    inputCall(
      ctx,
      [27_182, 8, 1_828, 45_904].map((n) => ({ payload: { body: zeros(n) } })),
    ),
  spec({ call, server }) {
    expect(call.code).toBe(status.OK);
    expect(call.response?.aggregated_payload_size).toBe(74_922);
    expect(server.messages).toEqual([4]);
  },
});

const serverStreaming = defineCase({
  name: 'server_streaming',
  source: SPEC,
  reuse: true,
  run: (ctx) =>
    outputCall(ctx, { response_parameters: [31_415, 9, 2_653, 58_979].map((size) => ({ size })) }),
  spec({ call }) {
    expect(call.code).toBe(status.OK);
    expect(call.sizes).toEqual([31_415, 9, 2_653, 58_979]);
    expect(call.zeros).toBe(true);
  },
});

const pingPong = defineCase({
  name: 'ping_pong',
  source: SPEC,
  reuse: true,
  async run({ clients, server }) {
    const { id, md } = callMetadata();
    const requests = [27_182, 8, 1_828, 45_904];
    const responses = [31_415, 9, 2_653, 58_979];
    const call = clients.test.FullDuplexCall(md, {});
    const send = (i: number) =>
      call.write({
        response_parameters: [{ size: responses[i] }],
        payload: { body: zeros(requests[i] ?? 0) },
      });
    const view = collect(call, payloads, (_m, n) => {
      // After each reply, the next request; after the fourth, half-close.
      if (n < 4) send(n);
      else call.end();
    });
    send(0);
    return { call: sizes(await view), server: await settledView(server, id) };
  },
  spec({ call, server }) {
    expect(call.code).toBe(status.OK);
    expect(call.sizes).toEqual([31_415, 9, 2_653, 58_979]);
    expect(server.messages).toEqual([4]);
  },
});

const emptyStream = defineCase({
  name: 'empty_stream',
  source: SPEC,
  reuse: true,
  run: (ctx) => duplexCall(ctx, []),
  spec({ call, server }) {
    expect(call.code).toBe(status.OK);
    expect(call.sizes).toEqual([]);
    expect(server.messages).toEqual([0]);
  },
});

const customMetadata = defineCase({
  name: 'custom_metadata',
  source: SPEC,
  reuse: true,
  async run(ctx) {
    const extra = { [ECHO_INITIAL]: ECHO_VALUE, [ECHO_TRAILING]: ECHO_BIN };
    return {
      unary: await unaryCall(ctx, LARGE, { extra }),
      duplex: await duplexCall(
        ctx,
        [{ response_parameters: [{ size: LARGE_RESPONSE }], payload: { body: zeros(LARGE_REQUEST) } }],
        extra,
      ),
    };
  },
  spec({ unary: u, duplex: d }) {
    for (const v of [u, d]) {
      expect(v.call.code).toBe(status.OK);
      expect(v.call.headers?.[ECHO_INITIAL]).toEqual([ECHO_VALUE]);
      expect(v.call.trailers?.[ECHO_TRAILING]).toEqual(['hex:ababab']);
      // what the server received: the ASCII value and the binary value, as sent
      expect(v.server.metadata[0]?.[ECHO_INITIAL]).toEqual([ECHO_VALUE]);
      expect(v.server.metadata[0]?.[ECHO_TRAILING]).toEqual(['hex:ababab']);
    }
    expect(d.call.sizes).toEqual([LARGE_RESPONSE]);
  },
});

const statusCodeAndMessage = defineCase({
  name: 'status_code_and_message',
  source: SPEC,
  async run(ctx) {
    const responseStatus = { code: 2, message: 'test status message' };
    return {
      unary: await unaryCall(ctx, { response_status: responseStatus }),
      duplex: await duplexCall(ctx, [{ response_status: responseStatus }]),
    };
  },
  spec({ unary: u, duplex: d }) {
    for (const v of [u, d]) {
      expect(v.call.code).toBe(2);
      expect(v.call.details).toBe('test status message');
      expect(v.server.executions).toBe(1);
    }
  },
});

const specialStatusMessage = defineCase({
  name: 'special_status_message',
  source: SPEC,
  run: (ctx) => unaryCall(ctx, { response_status: { code: 2, message: SPECIAL_MESSAGE } }),
  spec({ call }) {
    expect(call.code).toBe(2);
    expect(call.details).toBe(SPECIAL_MESSAGE);
  },
});

const unimplementedMethod = defineCase({
  name: 'unimplemented_method',
  source: SPEC,
  async run({ clients }) {
    const { md } = callMetadata();
    return seen(await unary(clients.test.UnimplementedCall.bind(clients.test), {}, md));
  },
  spec(call) {
    expect(call.code).toBe(status.UNIMPLEMENTED);
  },
});

const unimplementedService = defineCase({
  name: 'unimplemented_service',
  source: SPEC,
  async run({ clients }) {
    const { md } = callMetadata();
    return seen(await unary(clients.unimplemented.UnimplementedCall.bind(clients.unimplemented), {}, md));
  },
  spec(call) {
    expect(call.code).toBe(status.UNIMPLEMENTED);
  },
});

const cancelAfterBegin = defineCase({
  name: 'cancel_after_begin',
  source: SPEC,
  async run({ clients }) {
    const { md } = callMetadata();
    // Whether the server saw the call at all is a race in every client; only the client's view.
    return seen(await inputStream(clients.test, md, async (call) => call.cancel()));
  },
  spec(call) {
    expect(call.code).toBe(status.CANCELLED);
  },
});

const cancelAfterFirstResponse = defineCase({
  name: 'cancel_after_first_response',
  source: `${SPEC}; the server must see the cancellation (${ISSUE})`,
  async run({ clients, server }) {
    const { id, md } = callMetadata();
    const call = clients.test.FullDuplexCall(md, {});
    const view = collect(call, payloads, () => call.cancel());
    call.write({ response_parameters: [{ size: 31_415 }], payload: { body: zeros(27_182) } });
    return { call: sizes(await view), server: await settledView(server, id) };
  },
  spec({ call, server }) {
    expect(call.code).toBe(status.CANCELLED);
    expect(call.sizes).toEqual([31_415]);
    expect(server.executions).toBe(1);
    expect(server.cancelled).toEqual([true]);
  },
});

const timeoutOnSleepingServer = defineCase({
  name: 'timeout_on_sleeping_server',
  source: SPEC,
  async run({ clients }) {
    const { md } = callMetadata();
    const call = clients.test.FullDuplexCall(md, { deadline: Date.now() + 1 });
    const view = collect(call, payloads);
    call.write({ payload: { body: zeros(27_182) } });
    // Whether the 1 ms call reached the server is a race in every client; only the client's view.
    return sizes(await view);
  },
  spec(call) {
    expect(call.code).toBe(status.DEADLINE_EXCEEDED);
  },
});

// ---------------------------------------------------------------------------------------------
// Issue 13's additions: large messages, long streams, cancel and deadline seen by the server,
// getPeer, the metadata event, exactly-once execution, no replay after headers
// ---------------------------------------------------------------------------------------------

const fourMegabyteUnary = defineCase({
  name: '4 MB messages both ways (unary)',
  source: ISSUE,
  reuse: true,
  run: (ctx) => unaryCall(ctx, { response_size: FOUR_MB, payload: { body: zeros(FOUR_MB) } }),
  spec({ call, server }) {
    expect(call.code).toBe(status.OK);
    expect(call.response?.payload?.size).toBe(FOUR_MB);
    expect(server.executions).toBe(1);
  },
});

const fourMegabyteStream = defineCase({
  name: '4 MB messages both ways (bidi stream)',
  source: ISSUE,
  reuse: true,
  run: (ctx) =>
    duplexCall(
      ctx,
      repeat(2, () => ({ response_parameters: [{ size: FOUR_MB }], payload: { body: zeros(FOUR_MB) } })),
    ),
  spec({ call, server }) {
    expect(call.code).toBe(status.OK);
    expect(call.sizes).toEqual([FOUR_MB, FOUR_MB]);
    expect(server.messages).toEqual([2]);
  },
});

const tenThousandUp = defineCase({
  name: '10,000-message client stream',
  source: ISSUE,
  reuse: true,
  run: (ctx) =>
    inputCall(
      ctx,
      repeat(TEN_THOUSAND, () => ({ payload: { body: zeros(10) } })),
    ),
  spec({ call, server }) {
    expect(call.code).toBe(status.OK);
    expect(call.response?.aggregated_payload_size).toBe(TEN_THOUSAND * 10);
    expect(server.messages).toEqual([TEN_THOUSAND]);
  },
});

const tenThousandDown = defineCase({
  name: '10,000-message server stream',
  source: ISSUE,
  reuse: true,
  async run({ clients, server }) {
    const { id, md } = callMetadata();
    const call = clients.test.StreamingOutputCall(
      { response_parameters: [...repeat(TEN_THOUSAND, (i) => ({ size: i % 17 }))] },
      md,
      {},
    );
    const { messages, ...view } = seen(
      await collect(call, (m: StreamingOutputCallResponse) => m.payload?.body?.length ?? -1),
    );
    // 10,000 sizes reduced to what the spec asks: all of them, in order.
    return {
      call: { ...view, count: messages.length, inOrder: messages.every((n, i) => n === i % 17) },
      server: await settledView(server, id),
    };
  },
  spec({ call }) {
    expect(call.code).toBe(status.OK);
    expect(call.count).toBe(TEN_THOUSAND);
    expect(call.inOrder).toBe(true);
  },
});

const cancelSeenByServerUnary = defineCase({
  name: 'cancel seen by the server (unary)',
  source: ISSUE,
  run: (ctx) =>
    unaryCall(
      ctx,
      {},
      {
        extra: { [Control.hold]: '1' },
        control: (id) => ({ afterStart: (cancel) => void ctx.server.whenStarted(id).then(cancel) }),
      },
    ),
  spec({ call, server }) {
    expect(call.code).toBe(status.CANCELLED);
    expect(server.executions).toBe(1);
    expect(server.cancelled).toEqual([true]);
    expect(server.answered).toEqual([false]);
  },
});

const cancelSeenByServerStream = defineCase({
  name: 'cancel seen by the server (client stream)',
  source: ISSUE,
  async run({ clients, server }) {
    const { id, md } = callMetadata({ [Control.hold]: '1' });
    const view = await inputStream(clients.test, md, async (call) => {
      call.write({ payload: { body: zeros(100) } });
      await server.whenStarted(id);
      call.cancel();
    });
    return { call: seen(view), server: await settledView(server, id) };
  },
  spec({ call, server }) {
    expect(call.code).toBe(status.CANCELLED);
    expect(server.executions).toBe(1);
    expect(server.cancelled).toEqual([true]);
  },
});

const deadlineSeenByServer = defineCase({
  name: 'deadline seen by the server (unary and server stream)',
  source: ISSUE,
  async run(ctx) {
    const deadline = Date.now() + DEADLINE_MS;
    const extra = { [Control.hold]: '1' };
    const [u, s] = await Promise.all([
      unaryCall(ctx, {}, { extra, deadline }),
      outputCall(ctx, { response_parameters: [{ size: 1 }] }, { extra, deadline }),
    ]);
    return { unary: u, stream: s };
  },
  spec({ unary: u, stream: s }) {
    for (const v of [u, s]) {
      expect(v.call.code).toBe(status.DEADLINE_EXCEEDED);
      expect(v.server.executions).toBe(1);
      expect(v.server.deadlines).toEqual(['caller deadline']);
      // the handler learns that the call is over, and never answers it
      expect(v.server.cancelled).toEqual([true]);
      expect(v.server.answered).toEqual([false]);
    }
  },
});

const noDefaultDeadlineOnStreams = defineCase({
  name: 'no default deadline on streaming calls (server view)',
  source: ISSUE,
  reuse: true,
  run: (ctx) => duplexCall(ctx, [{ response_parameters: [{ size: 1 }] }]),
  spec({ call, server }) {
    expect(call.code).toBe(status.OK);
    expect(server.deadlines).toEqual(['none']);
  },
});

const streamOutlivesServiceTimeout = defineCase({
  name: 'a stream outlives the service timeout (15 s default, on a fake clock)',
  source: ISSUE,
  async run({ clients, server }) {
    // Only Date and the interval timers are faked: grpc-js and the sockets keep real timeouts,
    // while anything that measures a call's age by Date or sweeps with an interval sees 16 s go by.
    vi.useFakeTimers({ toFake: ['Date', 'setInterval', 'clearInterval'] });
    try {
      const { id, md } = callMetadata();
      const call = clients.test.FullDuplexCall(md, {});
      let seenSoFar = 0;
      let next = () => {};
      const view = collect(call, payloads, (_m, n) => {
        seenSoFar = n;
        next();
      });
      const reply = (n: number) =>
        new Promise<void>((resolve) => {
          if (seenSoFar >= n) resolve();
          else next = resolve;
        });
      call.write({ response_parameters: [{ size: 1 }] });
      await reply(1);
      vi.advanceTimersByTime(16_000);
      call.write({ response_parameters: [{ size: 2 }] });
      await Promise.race([reply(2), view]);
      call.end();
      return { call: sizes(await view), server: await settledView(server, id) };
    } finally {
      vi.useRealTimers();
    }
  },
  spec({ call, server }) {
    expect(call.code).toBe(status.OK);
    expect(call.sizes).toEqual([1, 2]);
    expect(server.cancelled).toEqual([false]);
  },
});

const getPeer = defineCase({
  name: 'getPeer() is the server address',
  source: ISSUE,
  reuse: true,
  async run({ clients, server }) {
    const u = callMetadata({ [ECHO_INITIAL]: 'x' });
    const unaryView = await unary(clients.test.UnaryCall.bind(clients.test), { response_size: 1 }, u.md);
    const s = callMetadata({ [ECHO_INITIAL]: 'x' });
    const stream = await collect(
      clients.test.StreamingOutputCall({ response_parameters: [{ size: 1 }] }, s.md, {}),
      payloads,
    );
    await server.settled(u.id);
    await server.settled(s.id);
    return {
      unary: { atMetadata: unaryView.peerAtMetadata, atStatus: unaryView.peerAtStatus },
      stream: { atMetadata: stream.peerAtMetadata, atStatus: stream.peerAtStatus },
    };
  },
  spec(peers, { server }) {
    // grpc-js reports the connected address while the call runs and after it ended.
    for (const p of [peers.unary, peers.stream]) {
      expect(p.atMetadata).toBe(server.address);
      expect(p.atStatus).toBe(server.address);
    }
  },
});

const unaryMetadataEvent = defineCase({
  name: 'unary metadata event when the headers arrive',
  source: ISSUE,
  reuse: true,
  run(ctx) {
    // The server sends its headers, then answers only once the client said it saw them.
    return unaryCall(
      ctx,
      { response_size: 1 },
      {
        extra: { [ECHO_INITIAL]: ECHO_VALUE, [Control.awaitRelease]: '1' },
        control: (id) => ({ onMetadata: () => ctx.server.release(id) }),
      },
    );
  },
  spec({ call, server }) {
    expect(call.code).toBe(status.OK);
    expect(call.headers?.[ECHO_INITIAL]).toEqual([ECHO_VALUE]);
    expect(server.releasedBy).toEqual(['client']);
  },
});

/**
 * A call that reached the server and failed there (UNAVAILABLE after processing, a connection
 * dropped after processing, UNAVAILABLE after the response headers): the server ran it exactly
 * once, and the client got UNAVAILABLE.
 */
function exactlyOnce(
  name: string,
  source: string,
  run: (ctx: CaseContext) => Promise<{ call: Seen<CallView>; server: ServerView }>,
  also: (o: { call: Seen<CallView>; server: ServerView }) => void = () => {},
): InteropCase {
  return defineCase({
    name,
    source,
    run,
    spec(o) {
      expect(o.call.code).toBe(status.UNAVAILABLE);
      expect(o.server.executions).toBe(1);
      also(o);
    },
  });
}

const TWO_MESSAGES = [{ payload: { body: zeros(10) } }, { payload: { body: zeros(20) } }];

const unavailableAfterProcessingUnary = exactlyOnce(
  'exactly once: unary processed, then UNAVAILABLE',
  SEMANTICS,
  (ctx) => unaryCall(ctx, { response_status: PROCESSED_THEN_UNAVAILABLE }),
  ({ call }) => expect(call.details).toBe(PROCESSED_THEN_UNAVAILABLE.message),
);

const unavailableAfterProcessingStream = exactlyOnce(
  'exactly once: client stream processed, then UNAVAILABLE',
  SEMANTICS,
  (ctx) => inputCall(ctx, TWO_MESSAGES, { extra: { [Control.failWith]: String(status.UNAVAILABLE) } }),
  ({ server }) => expect(server.messages).toEqual([2]),
);

const droppedAfterProcessingUnary = exactlyOnce(
  'exactly once: unary processed, then the connection drops',
  SEMANTICS,
  (ctx) => unaryCall(ctx, { response_size: 1 }, { extra: { [Control.dropConnection]: '1' } }),
);

const droppedAfterProcessingStream = exactlyOnce(
  'exactly once: client stream processed, then the connection drops',
  SEMANTICS,
  (ctx) => inputCall(ctx, TWO_MESSAGES, { extra: { [Control.dropConnection]: '1' } }),
);

const headersArrived = ({ call }: { call: Seen<CallView> }) =>
  expect(call.headers?.[ECHO_INITIAL]).toEqual([ECHO_VALUE]);

const noReplayAfterHeadersUnary = exactlyOnce(
  'no replay after response headers (unary)',
  A6,
  (ctx) =>
    unaryCall(
      ctx,
      { response_status: PROCESSED_THEN_UNAVAILABLE },
      { extra: { [ECHO_INITIAL]: ECHO_VALUE } },
    ),
  headersArrived,
);

const noReplayAfterHeadersIdempotent = exactlyOnce(
  'no replay after response headers (idempotent unary; reference: grpc-js retry policy)',
  A6,
  (ctx) =>
    unaryCall(
      ctx,
      { response_status: PROCESSED_THEN_UNAVAILABLE },
      { extra: { [ECHO_INITIAL]: ECHO_VALUE }, idempotent: true },
    ),
  headersArrived,
);

const noReplayAfterHeadersBidi = exactlyOnce(
  'no replay after response headers (bidi stream)',
  A6,
  (ctx) => duplexCall(ctx, [{ response_status: PROCESSED_THEN_UNAVAILABLE }], { [ECHO_INITIAL]: ECHO_VALUE }),
  headersArrived,
);

/** Counts of status codes, by name. */
function tally(codes: readonly number[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of codes) {
    const name = status[c] ?? String(c);
    out[name] = (out[name] ?? 0) + 1;
  }
  return out;
}

/** Makes `n` UnaryCalls one after the other; returns their status codes. */
async function unaryCodes(
  clients: Clients,
  n: number,
  req: SimpleRequest,
  extra: Record<string, string> = {},
  deadlineMs?: number,
): Promise<number[]> {
  const codes: number[] = [];
  for (let i = 0; i < n; i++) {
    const { md } = callMetadata(extra);
    const opts = deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs };
    codes.push((await unary(clients.test.UnaryCall.bind(clients.test), req, md, opts)).code);
  }
  return codes;
}

const applicationErrors = defineCase({
  name: 'application errors leave later calls alone (breaker, outlier detection)',
  source: SEMANTICS,
  async run({ clients }) {
    const failures = [
      ...(await unaryCodes(clients, 25, { response_status: { code: status.UNKNOWN, message: 'app bug' } })),
      ...(await unaryCodes(clients, 10, {
        response_status: { code: status.INVALID_ARGUMENT, message: 'bad' },
      })),
    ];
    for (let i = 0; i < 10; i++) {
      const { md } = callMetadata();
      failures.push((await unary(clients.test.UnimplementedCall.bind(clients.test), {}, md)).code);
    }
    const after = await unaryCodes(clients, 5, { response_size: 1 });
    return { failures: tally(failures), after: tally(after) };
  },
  spec({ failures, after }) {
    expect(failures).toEqual({ UNKNOWN: 25, INVALID_ARGUMENT: 10, UNIMPLEMENTED: 10 });
    expect(after).toEqual({ OK: 5 });
  },
});

const callerDeadlines = defineCase({
  name: "the caller's deadline expiries leave later calls alone (breaker, outlier detection)",
  source: SEMANTICS,
  async run({ clients }) {
    const failures = await unaryCodes(clients, 25, {}, { [Control.hold]: '1' }, 5);
    const after = await unaryCodes(clients, 5, { response_size: 1 });
    return { failures: tally(failures), after: tally(after) };
  },
  spec({ failures, after }) {
    expect(failures).toEqual({ DEADLINE_EXCEEDED: 25 });
    expect(after).toEqual({ OK: 5 });
  },
});

// ---------------------------------------------------------------------------------------------
// mTLS only
// ---------------------------------------------------------------------------------------------

const authenticatedUsername = defineCase({
  name: 'Echo Authenticated Username: the client certificate identity',
  source: `${SPEC} (fill_username; the canonical form of an mTLS peer is its SPIFFE ID)`,
  only: 'mtls',
  reuse: true,
  run: (ctx) => unaryCall(ctx, { response_size: 1, fill_username: true }),
  spec({ call, server }) {
    expect(call.code).toBe(status.OK);
    expect(call.response?.username).toBe(CLIENT_IDENTITY);
    expect(server.peerIdentities).toEqual([CLIENT_IDENTITY]);
  },
});

const wrongServerIdentity = defineCase({
  name: 'a server with another identity: the call fails, nothing reaches it',
  source: 'DESIGN.md failure semantics (MESHLET_ERR_PEER_IDENTITY, no plaintext fallback)',
  only: 'mtls',
  serverIdentity: OTHER_IDENTITY,
  run: (ctx) => unaryCall(ctx, { response_size: 1 }, { deadline: Date.now() + 3_000 }),
  spec({ call, server }, { kind }) {
    expect(call.code).toBe(status.UNAVAILABLE);
    expect(server.executions).toBe(0);
    // The mesh names the failure with its error code (documented); grpc-js has its own words.
    if (kind !== 'grpc-js') expect(call.details).toContain('MESHLET_ERR_PEER_IDENTITY');
  },
  compare: ({ call, server }) => ({ code: call.code, server }),
});

export const CASES: readonly InteropCase[] = [
  emptyUnary,
  largeUnary,
  clientCompressedUnary,
  clientCompressedStreaming,
  clientStreaming,
  serverStreaming,
  pingPong,
  emptyStream,
  customMetadata,
  statusCodeAndMessage,
  specialStatusMessage,
  unimplementedMethod,
  unimplementedService,
  cancelAfterBegin,
  cancelAfterFirstResponse,
  timeoutOnSleepingServer,
  authenticatedUsername,
  wrongServerIdentity,
  fourMegabyteUnary,
  fourMegabyteStream,
  tenThousandUp,
  tenThousandDown,
  cancelSeenByServerUnary,
  cancelSeenByServerStream,
  deadlineSeenByServer,
  noDefaultDeadlineOnStreams,
  streamOutlivesServiceTimeout,
  getPeer,
  unaryMetadataEvent,
  unavailableAfterProcessingUnary,
  unavailableAfterProcessingStream,
  noReplayAfterHeadersUnary,
  noReplayAfterHeadersIdempotent,
  noReplayAfterHeadersBidi,
  droppedAfterProcessingUnary,
  droppedAfterProcessingStream,
  applicationErrors,
  callerDeadlines,
];

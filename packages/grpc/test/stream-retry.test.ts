import {
  type Client,
  type ClientDuplexStream,
  type ClientReadableStream,
  type ClientWritableStream,
  type handleClientStreamingCall,
  Metadata,
  makeGenericClientConstructor,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerWritableStream,
  type ServiceError,
  status,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import type { Mesh } from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import { createMeshClient, STREAM_RETRY_BUFFER_BYTES } from '../src/index.js';
import { meshFor, stopServer } from './helpers.js';

// Streaming calls are retried as gRPC does (gRFC A6): until the call commits — the server's
// response headers arrived, or the messages kept for a replay outgrew the buffer. A failure that
// may have been processed is retried only for a method the proto marks idempotent (Count, Sum,
// Echo here); Upload is not.

const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const parse = (b: Buffer) => JSON.parse(b.toString());
const method = (name: string, requestStream: boolean, responseStream: boolean, idempotent = true) => ({
  path: `/test.Streams/${name}`,
  requestStream,
  responseStream,
  requestSerialize: json,
  requestDeserialize: parse,
  responseSerialize: json,
  responseDeserialize: parse,
  originalName: name.toLowerCase(),
  // As @grpc/proto-loader gives `option idempotency_level = …` of a method.
  options: { idempotency_level: idempotent ? 'IDEMPOTENT' : 'IDEMPOTENCY_UNKNOWN' },
});
const definition = {
  Count: method('Count', false, true),
  Sum: method('Sum', true, false),
  Echo: method('Echo', true, true),
  Upload: method('Upload', true, false, false),
};
const StreamsClient = makeGenericClientConstructor(definition, 'Streams');
type Streams = Client & {
  count(req: { n: number }): ClientReadableStream<{ i: number; server: string }>;
  sum(cb: (err: ServiceError | null, res?: { sum: number; server: string }) => void): ClientWritableStream<{
    n: number;
    pad?: string;
  }>;
  upload(
    cb: (err: ServiceError | null, res?: { sum: number; server: string }) => void,
  ): ClientWritableStream<{ n: number }>;
  echo(): ClientDuplexStream<{ n: number }, { n: number; server: string }>;
};

interface Srv {
  name: string;
  port: number;
  calls: number;
  /** Fail each call with this status once it read its request stream (no response headers). */
  failWith: number | undefined;
  /** Send response headers first, then fail (the call commits before failing). */
  headersThenFail: boolean;
  /** Count: the time between its first message and the rest (ms). */
  pauseMs: number;
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function start(name: string): Promise<Srv> {
  const srv: Srv = { name, port: 0, calls: 0, failWith: undefined, headersThenFail: false, pauseMs: 0 };
  const fail = (call: { emit(e: 'error', v: unknown): unknown; sendMetadata(md: Metadata): void }) => {
    if (srv.headersThenFail) call.sendMetadata(new Metadata());
    call.emit('error', { code: srv.failWith, details: `${name} failed` });
  };
  const sumHandler: handleClientStreamingCall<{ n: number }, { sum: number; server: string }> = (
    call,
    cb,
  ) => {
    srv.calls++;
    let sum = 0;
    call.on('data', (m: { n: number }) => {
      sum += m.n;
    });
    call.on('end', () => {
      if (srv.failWith === undefined) return cb(null, { sum, server: name });
      if (srv.headersThenFail) call.sendMetadata(new Metadata());
      cb({ code: srv.failWith, details: `${name} failed` });
    });
  };
  const impl: UntypedServiceImplementation = {
    Count: (call: ServerWritableStream<{ n: number }, unknown>) => {
      srv.calls++;
      if (srv.failWith !== undefined) return fail(call);
      const rest = () => {
        for (let i = 1; i < call.request.n; i++) call.write({ i, server: name });
        call.end();
      };
      call.write({ i: 0, server: name });
      if (srv.pauseMs > 0) setTimeout(rest, srv.pauseMs);
      else rest();
    },
    Sum: sumHandler,
    Upload: sumHandler,
    Echo: (call: ServerDuplexStream<{ n: number }, unknown>) => {
      srv.calls++;
      const got: number[] = [];
      call.on('data', (m: { n: number }) => {
        got.push(m.n);
      });
      call.on('end', () => {
        if (srv.failWith !== undefined) return fail(call);
        for (const n of got) call.write({ n, server: name });
        call.end();
      });
    },
  };
  const server = new Server();
  server.addService(definition, impl);
  srv.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  cleanups.push(() => stopServer(server));
  return srv;
}

async function setup(
  extra: Record<string, unknown> = {},
): Promise<{ bad: Srv; good: Srv; client: Streams; mesh: Mesh; attempts: number[] }> {
  const bad = await start('bad');
  const good = await start('good');
  bad.failWith = status.UNAVAILABLE;
  // Round robin: every other first attempt goes to the bad server, and its retry to the good one.
  const mesh = await meshFor({
    streams: { endpoints: [`127.0.0.1:${bad.port}`, `127.0.0.1:${good.port}`], lb: 'round_robin', ...extra },
  });
  cleanups.push(() => mesh.close());
  const attempts: number[] = [];
  mesh.events.on('request', (e) => attempts.push(e.attempts));
  const client = createMeshClient(StreamsClient, 'mesh:///streams') as unknown as Streams;
  cleanups.push(() => client.close());
  return { bad, good, client, mesh, attempts };
}

function readAll<T>(stream: ClientReadableStream<T> | ClientDuplexStream<unknown, T>): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const got: T[] = [];
    stream.on('data', (d: T) => got.push(d));
    stream.on('error', reject);
    stream.on('end', () => resolve(got));
  });
}

describe('streaming calls are retried until they commit (gRFC A6)', () => {
  it('server streaming: a failure before any response is retried on another server', async () => {
    const { bad, good, client, attempts } = await setup();
    for (let k = 0; k < 4; k++) {
      const got = await readAll(client.count({ n: 3 }));
      expect(got).toEqual([0, 1, 2].map((i) => ({ i, server: 'good' })));
    }
    expect(bad.calls).toBeGreaterThan(0);
    expect(good.calls).toBe(4);
    expect(attempts.some((a) => a === 2)).toBe(true);
  });

  it('client streaming: every message is replayed on the retry, and writes complete', async () => {
    const { bad, client, attempts } = await setup();
    for (let k = 0; k < 2; k++) {
      const written: number[] = [];
      const result = new Promise<{ sum: number; server: string }>((resolve, reject) => {
        const call = client.sum((err, res) =>
          err ? reject(err) : resolve(res as { sum: number; server: string }),
        );
        for (let n = 1; n <= 10; n++) call.write({ n }, () => written.push(n));
        call.end();
      });
      expect(await result).toEqual({ sum: 55, server: 'good' });
      expect(written).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    }
    expect(bad.calls).toBeGreaterThan(0);
    expect(attempts).toContain(2);
  });

  it('bidi streaming: the replayed messages come back from the server that answered', async () => {
    const { client } = await setup();
    const call = client.echo();
    const all = readAll(call);
    for (let n = 0; n < 5; n++) call.write({ n });
    call.end();
    expect(await all).toEqual([0, 1, 2, 3, 4].map((n) => ({ n, server: 'good' })));
  });

  it('a call whose server already sent response headers is committed: its failure is not retried', async () => {
    const { bad, good, client, attempts } = await setup();
    bad.headersThenFail = true;
    const codes: number[] = [];
    for (let k = 0; k < 4; k++) {
      codes.push(
        await readAll(client.count({ n: 2 })).then(
          () => status.OK,
          (e: ServiceError) => e.code,
        ),
      );
    }
    // Round robin alternates: two calls reached the failing server and failed, two succeeded.
    expect(codes.filter((c) => c === status.UNAVAILABLE)).toHaveLength(2);
    expect(bad.calls).toBe(2);
    expect(good.calls).toBe(2);
    expect(attempts.every((a) => a === 1)).toBe(true);
  });

  it('a call that outgrew the replay buffer is committed: its failure is not retried', async () => {
    const { bad, good, client, attempts } = await setup();
    good.failWith = status.UNAVAILABLE; // wherever it goes, it fails
    const pad = 'x'.repeat(64 * 1024);
    const chunks = Math.ceil(STREAM_RETRY_BUFFER_BYTES / pad.length) + 1;
    const code = await new Promise<number>((resolve) => {
      const call = client.sum((err) => resolve(err ? err.code : status.OK));
      for (let n = 0; n < chunks; n++) call.write({ n, pad });
      call.end();
    });
    expect(code).toBe(status.UNAVAILABLE);
    expect(bad.calls + good.calls).toBe(1);
    expect(attempts).toEqual([1]);
  });

  it('a stream of a method not marked idempotent that failed after it was sent runs once', async () => {
    const { bad, good, client, attempts } = await setup();
    const codes: number[] = [];
    for (let k = 0; k < 2; k++) {
      codes.push(
        await new Promise<number>((resolve) => {
          const call = client.upload((err) => resolve(err ? err.code : status.OK));
          for (let n = 1; n <= 3; n++) call.write({ n });
          call.end();
        }),
      );
    }
    // Round robin: one call reached the failing server, which processed it and answered UNAVAILABLE.
    expect(codes.sort()).toEqual([status.OK, status.UNAVAILABLE]);
    expect(bad.calls).toBe(1);
    expect(good.calls).toBe(1);
    expect(attempts).toEqual([1, 1]);
  });

  it('a configured service timeout never cuts a stream (it is the deadline of unary calls only)', async () => {
    const { bad, good, client } = await setup({ timeout: '100ms' });
    bad.failWith = undefined;
    bad.pauseMs = 300;
    good.pauseMs = 300;
    const got = await readAll(client.count({ n: 3 }));
    expect(got.map((m) => m.i)).toEqual([0, 1, 2]);
  });

  it('retry: false leaves streams alone too', async () => {
    const { bad, good } = await setup({ retry: false });
    good.failWith = status.UNAVAILABLE;
    const client = createMeshClient(StreamsClient, 'mesh:///streams', { retry: false }) as unknown as Streams;
    cleanups.push(() => client.close());
    const code = await readAll(client.count({ n: 1 })).then(
      () => status.OK,
      (e: ServiceError) => e.code,
    );
    expect(code).toBe(status.UNAVAILABLE);
    expect(bad.calls + good.calls).toBe(1);
  });
});

/**
 * grpc-js's per-call options (`host`, `credentials`, `parent` with its deadline and cancellation,
 * `propagate_flags`) through `createMeshClient`, side by side with a raw grpc-js client to the same
 * server: the server must see the same thing. A mesh call keeps these in a side object made only
 * when one is given (mesh-call.ts, `CallExtras`), so each is checked here.
 */
import {
  CallCredentials,
  type Client,
  credentials,
  type handleUnaryCall,
  Metadata,
  propagate,
  type ServerUnaryCall,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { createMeshClient } from '../src/index.js';
import {
  EchoClient,
  type EchoClientType,
  type EchoReply,
  type EchoRequest,
  echo,
  meshFor,
  startEchoServer,
  stopServer,
  type TestServer,
} from './helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Seen {
  host: string;
  auth: string | undefined;
  deadline: number | undefined;
}

/** A backend that records what each call carried, and when a call was cancelled. */
async function backend(): Promise<{ server: TestServer; seen: Seen[]; cancelled: Promise<void>[] }> {
  const seen: Seen[] = [];
  const cancelled: Promise<void>[] = [];
  const handler: handleUnaryCall<EchoRequest, EchoReply> = (call, cb) => {
    const d = call.getDeadline();
    const ms = d instanceof Date ? d.getTime() : d;
    const auth = call.metadata.get('x-call-cred')[0];
    seen.push({
      host: call.getHost(),
      auth: typeof auth === 'string' ? auth : undefined,
      deadline: Number.isFinite(ms) ? ms : undefined,
    });
    if ((call.request.delayMs ?? 0) > 0) {
      // Held until the client gives up: the test waits for the cancellation to arrive here.
      cancelled.push(new Promise<void>((resolve) => call.on('cancelled', () => resolve())));
      return;
    }
    cb(null, { text: call.request.text, server: 'backend' });
  };
  const server = await startEchoServer('backend', { handler });
  cleanups.push(() => stopServer(server));
  return { server, seen, cancelled };
}

async function clients(port: number): Promise<{ raw: Client; mesh: Client }> {
  const m = await meshFor({ backend: { endpoints: [`127.0.0.1:${port}`] } });
  cleanups.push(() => m.close());
  const raw = new EchoClient(`127.0.0.1:${port}`, credentials.createInsecure());
  const mesh = createMeshClient(EchoClient, 'mesh:///backend');
  cleanups.push(
    () => raw.close(),
    () => mesh.close(),
  );
  return { raw, mesh };
}

/**
 * A front server whose handler calls the backend through `client` with the front call as its
 * parent (and `flags`, if given), and a raw client of it (`caller`); `child` holds each child
 * call's outcome (its reply text, or its error code).
 */
async function front(
  client: () => Client,
  flags?: number,
): Promise<{ caller: Client; child: Promise<unknown>[] }> {
  const child: Promise<unknown>[] = [];
  const handler: handleUnaryCall<EchoRequest, EchoReply> = (
    call: ServerUnaryCall<EchoRequest, EchoReply>,
    cb,
  ) => {
    const opts: Record<string, unknown> = { parent: call };
    if (flags !== undefined) opts.propagate_flags = flags;
    child.push(
      new Promise((resolve) => {
        (client() as EchoClientType).echo(call.request, opts, (err: ServiceError | null, res?: EchoReply) => {
          resolve(err ? err.code : res?.text);
          if (err) cb(err);
          else cb(null, res as EchoReply);
        });
      }),
    );
  };
  const server = await startEchoServer('front', { handler });
  const caller = new EchoClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
  cleanups.push(
    () => stopServer(server),
    () => caller.close(),
  );
  return { caller, child };
}

describe('createMeshClient: grpc-js per-call options, as raw grpc-js', () => {
  it('sends the call option `host` as the authority', async () => {
    const { server, seen } = await backend();
    const { raw, mesh } = await clients(server.port);
    await echo(raw, { text: 'a' }, { host: 'other.example:8443' });
    await echo(mesh, { text: 'a' }, { host: 'other.example:8443' });
    await echo(mesh, { text: 'b' });
    expect(seen.map((s) => s.host)).toEqual(['other.example:8443', 'other.example:8443', 'backend']);
  });

  it('applies per-call credentials (their metadata reaches the server), on every call that has them', async () => {
    const { server, seen } = await backend();
    const { raw, mesh } = await clients(server.port);
    let n = 0;
    const creds = CallCredentials.createFromMetadataGenerator((_opts, cb) => {
      const md = new Metadata();
      md.set('x-call-cred', `token-${++n}`);
      cb(null, md);
    });
    await echo(raw, { text: 'a' }, { credentials: creds });
    await echo(mesh, { text: 'a' }, { credentials: creds });
    await echo(mesh, { text: 'b' });
    expect(seen.map((s) => s.auth)).toEqual(['token-1', 'token-2', undefined]);
  });

  it("takes the parent call's deadline (grpc-timeout at the backend) as raw grpc-js does", async () => {
    const { server, seen } = await backend();
    const { raw, mesh } = await clients(server.port);
    for (const child of [raw, mesh]) {
      const f = await front(() => child);
      const deadline = Date.now() + 5_000;
      await echo(f.caller, { text: 'x' }, { deadline });
      await Promise.all(f.child);
      const got = seen.at(-1)?.deadline;
      expect(got).toBeDefined();
      // The backend's deadline is the parent's, as grpc-timeout carried it: what was left when the
      // child was sent, counted from when the backend received it (later by the transit time, which
      // a loaded machine stretches; no deadline at all without the parent's, see below).
      expect(Math.abs((got as number) - deadline)).toBeLessThan(2_000);
    }
    // Without DEADLINE in the flags, the child has no deadline of its parent's.
    const f = await front(() => mesh, propagate.CANCELLATION);
    await echo(f.caller, { text: 'y' }, { deadline: Date.now() + 5_000 });
    expect(seen.at(-1)?.deadline).toBeUndefined();
  });

  it('cancels the child when the parent call is cancelled, as raw grpc-js does', async () => {
    const { server, cancelled } = await backend();
    const { raw, mesh } = await clients(server.port);
    for (const child of [raw, mesh]) {
      const f = await front(() => child);
      const call = (f.caller as unknown as EchoClientType).echo(
        { text: 'hold', delayMs: 1 },
        {},
        () => {},
      ) as {
        cancel(): void;
      };
      // Cancel once the backend holds the child call.
      const before = cancelled.length;
      await expect.poll(() => cancelled.length).toBe(before + 1);
      call.cancel();
      await cancelled[before];
      expect(await f.child[0]).toBe(status.CANCELLED);
    }
  });
});

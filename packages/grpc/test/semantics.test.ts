/**
 * gRPC call semantics through `createMeshClient` against plain grpc-js servers on loopback, as the
 * HTTP ones are in `packages/fetch/test/semantics.test.ts`: what the breaker, outlier detection
 * and the default balancer make of the application's answers, the caller's deadlines and equal
 * servers (issue 13's "Done when").
 */
import {
  type Client,
  type handleUnaryCall,
  makeGenericClientConstructor,
  type ServiceError,
} from '@grpc/grpc-js';
import { type Mesh, type RequestEvent, runWithDeadline } from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import { createMeshClient } from '../src/index.js';
import {
  EchoClient,
  type EchoReply,
  type EchoRequest,
  echo,
  meshFor,
  startEchoServer,
  status,
  stopServer,
  type TestServer,
  unary,
} from './helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function mesh(services: Record<string, unknown>): Promise<Mesh> {
  const m = await meshFor(services);
  cleanups.push(() => m.close());
  return m;
}

function client(target = 'mesh:///echo'): Client {
  const c = createMeshClient(EchoClient, target);
  cleanups.push(() => c.close());
  return c;
}

/** Three grpc-js servers of the `test.Echo` service (`handler`: each one's, by its name). */
async function threeServers(
  handler?: (name: string) => handleUnaryCall<EchoRequest, EchoReply>,
): Promise<TestServer[]> {
  const list: TestServer[] = [];
  for (const name of ['a', 'b', 'c']) {
    const s = await startEchoServer(name, handler === undefined ? {} : { handler: handler(name) });
    cleanups.push(() => stopServer(s));
    list.push(s);
  }
  return list;
}

const endpoints = (list: TestServer[]) => list.map((s) => `127.0.0.1:${s.port}`);

/** A method none of the servers has: grpc-js answers UNIMPLEMENTED itself. */
const MissingClient = makeGenericClientConstructor(
  { Missing: unary('/test.Echo/Missing', 'missing') },
  'Missing',
);

function missing(c: Client): Promise<ServiceError> {
  return new Promise((resolve, reject) =>
    (c as Client & { missing: (r: object, cb: (err: ServiceError | null) => void) => void }).missing(
      {},
      (err) => (err ? resolve(err) : reject(new Error('the missing method answered'))),
    ),
  );
}

const failure = (p: Promise<unknown>): Promise<ServiceError> =>
  p.then(
    () => {
      throw new Error('the call succeeded');
    },
    (e: ServiceError) => e,
  );

/** The service's breaker, outlier detection and balancer hold nothing against any endpoint. */
function expectAllInRotation(m: Mesh, ejections: unknown[]): void {
  const rt = m.service('echo');
  expect(rt?.resilience.breaker?.stats()).toMatchObject({ state: 'closed', failures: 0 });
  expect(ejections).toEqual([]);
  for (const ep of rt?.endpoints ?? []) {
    expect(ep.failures).toBe(0);
    expect(ep.isEjected(rt?.now() ?? 0)).toBe(false);
  }
  const snap = m.snapshot().services.echo;
  expect(snap?.panic).toBe(false);
  expect(snap?.endpoints.map((e) => e.ejected)).toEqual([false, false, false]);
}

describe('gRPC call semantics against grpc-js servers', () => {
  it('100 application errors (UNKNOWN, INVALID_ARGUMENT, UNIMPLEMENTED) leave the breaker closed and every endpoint in rotation', async () => {
    const list = await threeServers(() => (call, cb) => {
      if (call.request.text === 'throw') {
        // A handler that fails: grpc-js answers UNKNOWN with its message.
        cb(new Error('handler failed'));
        return;
      }
      cb({ code: status.INVALID_ARGUMENT, details: 'bad text' });
    });
    const m = await mesh({ echo: { endpoints: endpoints(list), circuitBreaker: { volumeThreshold: 5 } } });
    const ejections: unknown[] = [];
    const retries: unknown[] = [];
    const requests: RequestEvent[] = [];
    m.events.on('ejection', (e) => ejections.push(e));
    m.events.on('retry', (e) => retries.push(e));
    m.events.on('request', (e) => requests.push(e));
    const c = client();
    const cm = createMeshClient(MissingClient, 'mesh:///echo');
    cleanups.push(() => cm.close());
    for (let i = 0; i < 100; i++) {
      const kind = i % 3;
      if (kind === 0) {
        const err = await failure(echo(c, { text: 'throw' }));
        expect(err.code).toBe(status.UNKNOWN);
      } else if (kind === 1) {
        const err = await failure(echo(c, { text: 'bad' }));
        expect(err).toMatchObject({ code: status.INVALID_ARGUMENT, details: 'bad text' });
      } else {
        const err = await missing(cm);
        expect(err.code).toBe(status.UNIMPLEMENTED);
      }
    }
    expect(requests).toHaveLength(100);
    expect(new Set(requests.map((r) => r.status))).toEqual(
      new Set([status.UNKNOWN, status.INVALID_ARGUMENT, status.UNIMPLEMENTED]),
    );
    expect(retries).toEqual([]);
    expectAllInRotation(m, ejections);
    // Every endpoint kept its share of the errors: the balancer did not steer away from any.
    const byEndpoint = new Map<string, number>();
    for (const r of requests) {
      const id = r.endpoint?.id ?? '';
      byEndpoint.set(id, (byEndpoint.get(id) ?? 0) + 1);
    }
    expect(byEndpoint.size).toBe(3);
    for (const n of byEndpoint.values()) expect(n).toBeGreaterThan(10);
  });

  it("100 expiries of the caller's deadline (its own, and the inbound request's in scope) leave the breaker closed and every endpoint in rotation", async () => {
    const held: Array<() => void> = [];
    const list = await threeServers((name) => (call, cb) => {
      // Answers only after the caller gave up (released at the end of the test).
      if (call.request.text === 'hang') held.push(() => cb(null, { text: 'late', server: name }));
      else cb(null, { text: call.request.text, server: name });
    });
    cleanups.push(() => {
      for (const release of held.splice(0)) release();
    });
    const m = await mesh({ echo: { endpoints: endpoints(list), circuitBreaker: { volumeThreshold: 5 } } });
    const ejections: unknown[] = [];
    const requests: unknown[] = [];
    m.events.on('ejection', (e) => ejections.push(e));
    m.events.on('request', (e) => requests.push(e));
    const c = client();
    const own = await Promise.all(
      Array.from({ length: 50 }, () => failure(echo(c, { text: 'hang' }, { deadline: Date.now() + 30 }))),
    );
    for (const err of own) expect(err.code).toBe(status.DEADLINE_EXCEEDED);
    const inbound = await Promise.all(
      Array.from({ length: 50 }, () =>
        failure(runWithDeadline(Date.now() + 30, () => echo(c, { text: 'hang' }))),
      ),
    );
    for (const err of inbound) expect(err.code).toBe(status.DEADLINE_EXCEEDED);
    expect(requests).toHaveLength(100);
    expectAllInRotation(m, ejections);
    // In rotation: the service answers, from every server. (Their latency estimates did rise: a
    // call cut at 30 ms says the endpoint takes at least that; they decay back as calls succeed.)
    const served = new Set<string>();
    for (let i = 0; i < 60; i++) served.add((await echo(c, { text: 'ok' })).server);
    expect(served).toEqual(new Set(['a', 'b', 'c']));
  });

  it('three equal servers at concurrency 1 each get at least 15% of 300 calls under the default balancer', async () => {
    const list = await threeServers();
    // No `lb`: the default balancer (peak-EWMA, power of two choices).
    const m = await mesh({ echo: { endpoints: endpoints(list) } });
    expect(m.service('echo')?.policy.lb.policy).toBe('peak_ewma');
    const c = client();
    for (let i = 0; i < 300; i++) await echo(c, { text: String(i) });
    const counts = list.map((s) => s.calls);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(300);
    for (const n of counts) expect(n).toBeGreaterThanOrEqual(45);
  });
});

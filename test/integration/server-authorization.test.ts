import type { Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { credentials, Metadata, ServerCredentials, status } from '@grpc/grpc-js';
import express from 'express';
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { meshMiddleware } from '../../packages/express/src/index.js';
import { meshPlugin } from '../../packages/fastify/src/index.js';
import { createMeshServer } from '../../packages/grpc/src/index.js';
import { EchoClient, type EchoReply, echoDefinition } from '../../packages/grpc/test/helpers.js';
import { createMesh, type Mesh } from '../../packages/meshlet/src/index.js';
import { getTelemetry } from '../../packages/telemetry/src/index.js';
import { createAuthorizer } from '../../packages/tls/src/index.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** One policy, enforced by all three server kinds. */
const authorizer = createAuthorizer([
  {
    name: 'deny-mallory',
    action: 'DENY',
    rules: [{ when: [{ key: 'request.headers[x-user]', values: ['mallory'] }] }],
  },
  {
    name: 'allow-known-users',
    action: 'ALLOW',
    rules: [{ when: [{ key: 'request.headers[x-user]', values: ['alice', 'mallory'] }] }],
  },
]);

async function httpStatus(url: string, user?: string): Promise<{ status: number; code?: string }> {
  const res = await fetch(url, { headers: user ? { 'x-user': user } : {} });
  const body = (await res.json()) as { error?: { code: string } };
  return { status: res.status, code: body.error?.code };
}

/**
 * An Express, a Fastify and a gRPC server, each with meshlet's inbound side built from `options`
 * (an explicit authorizer, or only the mesh): their HTTP bases and a gRPC call returning the status.
 */
async function threeServers(options: { authorizer?: typeof authorizer; mesh?: Mesh }) {
  const ex = express();
  ex.use(meshMiddleware(options));
  ex.get('/x', (_req, res) => {
    res.json({ ok: true });
  });
  const exServer = await new Promise<HttpServer>((resolve) => {
    const s = ex.listen(0, '127.0.0.1', () => resolve(s));
  });
  cleanups.push(() => new Promise<void>((r) => exServer.close(() => r())));
  cleanups.push(() => exServer.closeAllConnections());

  const fa = Fastify();
  await fa.register(meshPlugin, { ...options, drain: false });
  fa.get('/x', async () => ({ ok: true }));
  await fa.listen({ port: 0, host: '127.0.0.1' });
  cleanups.push(() => fa.close());

  const g = createMeshServer({ ...options, health: false });
  g.server.addService(echoDefinition, {
    Echo: (call: { request: { text: string } }, cb: (e: null, r: EchoReply) => void) =>
      cb(null, { text: call.request.text, server: 'g' }),
  });
  const gPort = await new Promise<number>((resolve, reject) =>
    g.server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  cleanups.push(() => g.server.forceShutdown());
  const client = new EchoClient(`127.0.0.1:${gPort}`, credentials.createInsecure());
  cleanups.push(() => client.close());
  const grpcCall = (user?: string) =>
    new Promise<number>((resolve) => {
      const md = new Metadata();
      if (user) md.set('x-user', user);
      (client as unknown as { echo: (...a: unknown[]) => void }).echo(
        { text: 'x' },
        md,
        (err: { code: number } | null) => resolve(err ? err.code : status.OK),
      );
    });
  const bases = [
    `http://127.0.0.1:${(exServer.address() as AddressInfo).port}`,
    `http://127.0.0.1:${(fa.server.address() as AddressInfo).port}`,
  ];
  return { bases, grpcCall };
}

describe('authorization: the same policy on Express, Fastify and gRPC', () => {
  it('allows alice, denies mallory (DENY) and anonymous callers (no ALLOW match)', async () => {
    const { bases, grpcCall } = await threeServers({ authorizer });
    for (const base of bases) {
      expect(await httpStatus(`${base}/x`, 'alice')).toEqual({ status: 200, code: undefined });
      expect(await httpStatus(`${base}/x`, 'mallory')).toEqual({
        status: 403,
        code: 'MESHLET_ERR_FORBIDDEN',
      });
      expect(await httpStatus(`${base}/x`)).toEqual({ status: 403, code: 'MESHLET_ERR_FORBIDDEN' });
    }
    expect(await grpcCall('alice')).toBe(status.OK);
    expect(await grpcCall('mallory')).toBe(status.PERMISSION_DENIED);
    expect(await grpcCall()).toBe(status.PERMISSION_DENIED);
    expect(authorizer.stats.denied).toBe(6);
  });

  it("given only the mesh, all three take the mesh's own policy (authorization: config) and telemetry", async () => {
    const mesh = await createMesh({
      authorization: {
        policies: [
          {
            name: 'allow-alice',
            action: 'ALLOW',
            rules: [{ when: [{ key: 'request.headers[x-user]', values: ['alice'] }] }],
          },
        ],
      },
    });
    cleanups.push(() => mesh.close());
    const { bases, grpcCall } = await threeServers({ mesh });
    for (const base of bases) {
      expect(await httpStatus(`${base}/x`, 'alice')).toEqual({ status: 200, code: undefined });
      expect(await httpStatus(`${base}/x`, 'bob')).toEqual({ status: 403, code: 'MESHLET_ERR_FORBIDDEN' });
    }
    expect(await grpcCall('alice')).toBe(status.OK);
    expect(await grpcCall('bob')).toBe(status.PERMISSION_DENIED);
    // The gRPC server reported its calls to the mesh's telemetry, like the other two (route: the method).
    const metrics = await getTelemetry(mesh)?.registry.metrics();
    expect(metrics).toMatch(/http_server_requests_total\{[^}]*http_route="\/[^"]*\/Echo"[^}]*\} 1/);
    // Denials are reported too, as Envoy reports its RBAC 403s: two HTTP ones and one gRPC one.
    const denied = [...(metrics ?? '').matchAll(/^http_server_requests_total\{([^}]*)\} (\d+)$/gm)]
      .filter(([, labels]) => /http_response_status_code="(403|7)"/.test(labels as string))
      .reduce((n, m) => n + Number(m[2]), 0);
    expect(
      denied,
      metrics
        ?.split('\n')
        .filter((l) => l.startsWith('http_server_requests_total'))
        .join('\n'),
    ).toBe(3);
  });
});

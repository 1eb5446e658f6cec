/**
 * Issue 14, finding 5: an Express router mounted at `/tenants/:tenant` gave one `http_route`
 * series per tenant (`req.baseUrl` is the mount path as matched), and case variants of a static
 * mount counted apart. Route labels are templates now, and every metric has a hard series limit
 * with a counter of what it refused.
 */
import { spawn } from 'node:child_process';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { meshMiddleware } from '../../packages/express/src/index.js';
import { createMesh } from '../../packages/meshlet/src/index.js';
import { getTelemetry } from '../../packages/telemetry/src/index.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The `http_route` label of every `http_server_requests_total` sample. */
function routes(text: string): string[] {
  const out = new Set<string>();
  for (const m of text.matchAll(/^http_server_requests_total\{([^}]*)\}/gm)) {
    const r = /http_route="([^"]*)"/.exec(m[1] as string);
    out.add(r ? (r[1] as string) : `<${m[1]}>`);
  }
  return [...out].sort();
}

function promtool(text: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn('promtool', ['check', 'metrics']);
    let out = '';
    p.stdout.on('data', (c) => {
      out += c;
    });
    p.stderr.on('data', (c) => {
      out += c;
    });
    p.on('close', (code) => resolve({ code, out }));
    p.stdin.end(text);
  });
}

describe('bounded route labels', () => {
  it('labels requests with route templates, mounts included: one series whatever the tenants and case variants', async () => {
    const mesh = await createMesh({ local: { workload: 'tenants' } }, { telemetry: { admin: false } });
    cleanups.push(() => mesh.close());
    const app = express();
    app.use(meshMiddleware({ mesh }));
    const tenant = express.Router();
    tenant.get('/users/:id', (req, res) => {
      res.json({ id: req.params.id });
    });
    app.use('/tenants/:tenant', tenant);
    const api = express.Router();
    api.get('/status', (_req, res) => {
      res.json({ ok: true });
    });
    app.use('/api', api);
    app.get('/', (_req, res) => {
      res.json({});
    });
    const server = await new Promise<HttpServer>((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    cleanups.push(() => server.closeAllConnections());
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    for (let i = 0; i < 150; i++) {
      const r = await fetch(`${base}/tenants/t${i}/users/${i}`);
      expect(r.status).toBe(200);
      await r.arrayBuffer();
    }
    for (const p of ['/api/status', '/API/status', '/Api/Status', '/', '/nowhere'])
      await (await fetch(base + p)).arrayBuffer();
    await new Promise((r) => setImmediate(r));
    const text = (await getTelemetry(mesh)?.scrape())?.body ?? '';
    expect(routes(text)).toEqual(['', '/', '/api/status', '/tenants/:tenant/users/:id']);
    expect(text).toMatch(
      /http_server_requests_total\{[^}]*http_route="\/tenants\/:tenant\/users\/:id"[^}]*\} 150/,
    );
  });

  it('caps every metric at maxSeries: the rest goes to an otel_metric_overflow series, counted as dropped', async () => {
    const mesh = await createMesh(
      { local: { workload: 'capped' }, telemetry: { metrics: { maxSeries: 20 } } },
      { telemetry: { admin: false } },
    );
    cleanups.push(() => mesh.close());
    const tel = getTelemetry(mesh);
    // an adapter that reports raw paths instead of templates: 500 distinct "routes"
    for (let i = 0; i < 500; i++) {
      tel?.server
        .start({ method: 'GET', path: `/p/${i}`, route: `/p/${i}`, header: () => undefined })
        .end(200);
    }
    const text = (await tel?.scrape())?.body ?? '';
    const series = text.match(/^http_server_requests_total\{/gm) ?? [];
    expect(series.length).toBe(21); // 20 of their own, and the overflow series
    expect(text).toMatch(/^http_server_requests_total\{otel_metric_overflow="true"\} 480$/m);
    expect(text).toMatch(/^meshlet_metric_series_dropped_total\{metric="http_server_requests_total"\} 480$/m);
    const r = await promtool(text);
    expect(r.code, r.out).toBe(0);
  });
});

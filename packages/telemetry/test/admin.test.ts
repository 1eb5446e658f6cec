import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMeshError, Mesh, parseConfig } from '@meshlet/core';
import { chromium } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { installTelemetry } from '../src/index.js';
import { type Backend, run, startBackend, startMesh, type TestMesh } from './helpers.js';

const examples = fileURLToPath(new URL('../../../examples/observability/', import.meta.url));

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function setup(
  extra: Record<string, unknown> = {},
): Promise<{ m: TestMesh; b: Backend[]; url: string }> {
  const b = [await startBackend(), await startBackend()];
  for (const x of b) cleanup.push(() => x.close());
  const c = await startBackend();
  cleanup.push(() => c.close());
  const m = await startMesh({
    services: {
      reviews: { endpoints: b.map((x) => x.address), lb: 'round_robin' },
      ratings: { endpoints: [c.address] },
    },
    admin: { port: 0 },
    ...extra,
  });
  cleanup.push(() => m.close());
  const url = m.telemetry.admin?.url;
  if (!url) throw new Error('admin did not start');
  return { m, b, url };
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

describe('admin endpoint', () => {
  it('serves /metrics, /healthz, /config_dump, /clusters and the page on the bound port', async () => {
    const { m, url } = await setup();
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(m.telemetry.admin?.address.port).toBeGreaterThan(0);
    await (await m.fetch('http://reviews/')).text();

    const metrics = await fetch(`${url}metrics`);
    expect(metrics.headers.get('content-type')).toContain('text/plain; version=0.0.4');
    expect(await metrics.text()).toContain('http_client_requests_total{service="reviews"');

    expect((await fetch(`${url}healthz`)).status).toBe(200);
    const dump = (await (await fetch(`${url}config_dump`)).json()) as {
      services: Record<string, unknown>;
      extensions: { admin?: { url: string } };
    };
    expect(Object.keys(dump.services).sort()).toEqual(['ratings', 'reviews']);
    expect(dump.extensions.admin?.url).toBe(url);

    const clusters = (await (await fetch(`${url}clusters`)).json()) as {
      services: Array<{
        name: string;
        endpoints: Array<{ state: string; attempts: number }>;
        stats: { requests: number };
      }>;
    };
    const reviews = clusters.services.find((s) => s.name === 'reviews');
    expect(reviews?.endpoints).toHaveLength(2);
    expect(reviews?.endpoints.every((e) => e.state === 'healthy')).toBe(true);
    expect(reviews?.stats.requests).toBe(1);

    const page = await fetch(url);
    expect(page.headers.get('content-type')).toContain('text/html');
    expect(await page.text()).toContain('<title>meshlet admin</title>');
    expect((await fetch(`${url}nope`)).status).toBe(404);
    expect((await fetch(`${url}metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('answers /ready 503 until the mesh is ready, then 200', async () => {
    const mesh = new Mesh(
      parseConfig({ services: { a: { endpoints: ['127.0.0.1:1'] } }, admin: { port: 0 } }),
    );
    cleanup.push(() => mesh.close());
    const tel = await installTelemetry(mesh);
    const url = tel.admin?.url as string;
    expect((await fetch(`${url}ready`)).status).toBe(503);
    await mesh.ready();
    expect((await fetch(`${url}ready`)).status).toBe(200);
    await mesh.close();
    await expect(fetch(`${url}ready`)).rejects.toThrow(); // closed with the mesh
  });

  it('fails with MESHLET_ERR_CONFIG naming admin.port when the port is taken', async () => {
    const { m } = await setup();
    const port = m.telemetry.admin?.address.port as number;
    const other = new Mesh(parseConfig({ admin: { port } }));
    cleanup.push(() => other.close());
    const err = await installTelemetry(other).catch((e: unknown) => e);
    expect(isMeshError(err) && err.code).toBe('MESHLET_ERR_CONFIG');
    expect(String((err as Error).message)).toContain('admin');
  });

  it('rejects bad admin and telemetry config by field path', () => {
    const bad = () =>
      parseConfig({
        admin: { port: 70000 },
        telemetry: { metrics: { naming: 'x' }, tracing: { propagation: ['jaeger'] } },
      });
    expect(bad).toThrow(/admin\.port: must be <= 65535/);
    expect(bad).toThrow(/telemetry\.metrics\.naming: must be one of otel, istio, both/);
    expect(bad).toThrow(
      /telemetry\.tracing\.propagation\[0\]: must be one of w3c, b3, b3multi, got the string "jaeger"/,
    );
    expect(() => parseConfig({ admin: {} })).toThrow(/admin\.port/);
  });
});

describe('admin page in headless Chromium', () => {
  it('loads, shows the services and endpoints, and updates as traffic flows', async () => {
    const { m, url } = await setup();
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    cleanup.push(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${url}?interval=250`);
    await page.waitForSelector('section[data-service="reviews"]');
    expect(await page.locator('section[data-service="ratings"]').count()).toBe(1);
    expect(await page.locator('section[data-service="reviews"] tbody tr').count()).toBe(2);
    expect(await page.locator('section[data-service="reviews"] .badge.healthy').count()).toBe(2);

    // Traffic flows while the page polls: the request counter it shows goes up.
    let stop = false;
    const traffic = (async () => {
      while (!stop) await (await m.fetch('http://reviews/')).text();
    })();
    await page.waitForFunction(
      'Number(document.querySelector(\'section[data-service="reviews"] .total\')?.textContent) > 20',
      undefined,
      { timeout: 15_000 },
    );
    await page.waitForFunction(
      'Number(document.querySelector(\'section[data-service="reviews"] .rate\')?.textContent) > 0',
      undefined,
      { timeout: 15_000 },
    );
    m.mesh.events.emit('breaker', { service: 'ratings', state: 'open' });
    await page.waitForSelector('section[data-service="ratings"] .badge.open');
    await page.screenshot({ path: join(tmpdir(), 'meshlet-admin.png'), fullPage: true });
    stop = true;
    await traffic;
    expect(errors).toEqual([]);
  });
});

describe('scraped by a real Prometheus server', () => {
  it('accepts the example scrape config', async () => {
    const r = await run('promtool', ['check', 'config', join(examples, 'prometheus.yml')], '');
    expect(r.code, r.out).toBe(0);
  });

  it('ingests meshlet series (and exemplars) that read back through the HTTP API', async () => {
    const { BasicTracerProvider } = await import('@opentelemetry/sdk-trace-base');
    const provider = new BasicTracerProvider();
    const b = await startBackend();
    cleanup.push(() => b.close());
    const m = await startMesh(
      {
        services: { reviews: { endpoints: [b.address] } },
        admin: { port: 0 },
        telemetry: { metrics: { exemplars: true } },
      },
      { tracerProvider: provider },
    );
    cleanup.push(() => m.close());
    for (let i = 0; i < 5; i++) await (await m.fetch('http://reviews/')).text();
    const target = `127.0.0.1:${m.telemetry.admin?.address.port}`;

    const dir = mkdtempSync(join(tmpdir(), 'meshlet-prom-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(
      join(dir, 'prometheus.yml'),
      `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: meshlet\n    static_configs:\n      - targets: ['${target}']\n`,
    );
    const port = await freePort();
    const prom: ChildProcess = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--enable-feature=exemplar-storage',
      ],
      { stdio: 'ignore' },
    );
    cleanup.push(
      () =>
        new Promise<void>((resolve) => {
          if (prom.exitCode !== null) return resolve();
          prom.once('exit', () => resolve());
          prom.kill('SIGTERM');
        }),
    );
    const api = `http://127.0.0.1:${port}/api/v1`;
    type Result = {
      status: string;
      data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
    };
    let result: Result['data']['result'] = [];
    for (let i = 0; i < 150 && result.length === 0; i++) {
      try {
        const r = (await (
          await fetch(
            `${api}/query?query=${encodeURIComponent('http_client_requests_total{service="reviews"}')}`,
          )
        ).json()) as Result;
        result = r.data.result;
      } catch {
        // not listening yet
      }
      if (result.length === 0) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(result).toHaveLength(1);
    expect(result[0]?.metric).toMatchObject({
      job: 'meshlet',
      service: 'reviews',
      outcome: 'success',
      http_request_method: 'GET',
    });
    expect(Number(result[0]?.value[1])).toBe(5);

    const up = (await (
      await fetch(`${api}/query?query=meshlet_endpoints%7Bstate%3D%22healthy%22%7D`)
    ).json()) as Result;
    expect(Number(up.data.result[0]?.value[1])).toBe(1);
    const now = Date.now() / 1000;
    const ex = (await (
      await fetch(
        `${api}/query_exemplars?query=${encodeURIComponent('http_client_request_duration_seconds_bucket')}&start=${now - 600}&end=${now + 60}`,
      )
    ).json()) as { data: Array<{ exemplars: Array<{ labels: Record<string, string> }> }> };
    const traceIds = ex.data.flatMap((s) => s.exemplars.map((e) => e.labels.trace_id));
    expect(traceIds.length).toBeGreaterThan(0);
    expect(traceIds[0]).toMatch(/^[0-9a-f]{32}$/);

    // Every query of the example Grafana dashboard is valid PromQL (Prometheus evaluates it).
    const dashboard = JSON.parse(readFileSync(join(examples, 'grafana-dashboard.json'), 'utf8')) as {
      panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
    };
    for (const panel of dashboard.panels) {
      for (const t of panel.targets) {
        const expr = t.expr.replaceAll('$service', '.*').replaceAll('$__rate_interval', '1m');
        const r = (await (await fetch(`${api}/query?query=${encodeURIComponent(expr)}`)).json()) as Result;
        expect(r.status, `${panel.title}: ${expr}`).toBe('success');
      }
    }
  }, 60_000);
});

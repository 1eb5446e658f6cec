import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ErrorCodes,
  isMeshError,
  Mesh,
  MeshError,
  type MeshSnapshot,
  orcaLoadReport,
  parseConfig,
  startDraining,
} from '@meshlet/core';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type ClustersDocument, inboundTelemetry, installTelemetry } from '../src/index.js';
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

    const clusters = (await (await fetch(`${url}clusters`)).json()) as ClustersDocument;
    const reviews = clusters.services.find((s) => s.name === 'reviews');
    expect(reviews?.endpoints).toHaveLength(2);
    // One request went to one endpoint (round robin): that one is healthy, the other untried.
    expect(reviews?.endpoints.map((e) => e.state).sort()).toEqual(['healthy', 'idle']);
    expect(reviews?.stats?.requests).toBe(1);
    expect(reviews?.recent.count).toBe(1);
    expect(reviews?.recent.p50Ms).toBeGreaterThan(0);
    expect(clusters.services.find((s) => s.name === 'ratings')?.health).toBe('idle');

    const page = await fetch(url);
    expect(page.headers.get('content-type')).toContain('text/html');
    expect(await page.text()).toContain('<title>meshlet admin</title>');
    expect((await fetch(`${url}nope`)).status).toBe(404);
    expect((await fetch(`${url}metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('answers /ready 503 until the mesh is ready, 200 while serving, 503 while draining', async () => {
    const mesh = new Mesh(
      parseConfig({ services: { a: { endpoints: ['127.0.0.1:1'] } }, admin: { port: 0 } }),
    );
    cleanup.push(() => mesh.close());
    const tel = await installTelemetry(mesh);
    const url = tel.admin?.url as string;
    expect((await fetch(`${url}ready`)).status).toBe(503);
    await mesh.ready();
    expect((await fetch(`${url}ready`)).status).toBe(200);
    startDraining(mesh);
    const draining = await fetch(`${url}ready`);
    expect(draining.status).toBe(503);
    expect(await draining.text()).toBe('draining\n');
    expect(((await (await fetch(`${url}clusters`)).json()) as ClustersDocument).serving).toBe('draining');
    expect((await fetch(`${url}healthz`)).status).toBe(200); // liveness is not readiness
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

/** The mesh of the page tests: every state the page must tell apart, and an inbound server. */
async function truthScenario(): Promise<{
  m: TestMesh;
  url: string;
  closedPort: number;
  ghostFile: string;
  inboundUrl: string;
}> {
  const [v1, v2, orders] = [await startBackend(), await startBackend(), await startBackend()];
  for (const x of [v1, v2, orders]) cleanup.push(() => x.close());
  const closedPort = await freePort(); // nothing listens: every connection is refused
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-admin-page-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const ghostFile = join(dir, 'ghost-endpoints.yaml');
  writeFileSync(ghostFile, '# every ghost pod is gone\n[]\n');
  const m = await startMesh({
    services: {
      // (c) healthy endpoints whose names discovery knows (as a pod name would come from Kubernetes)
      reviews: {
        lb: 'round_robin',
        endpoints: [
          { address: '127.0.0.1', port: v1.port, name: 'reviews-v1-6d9f7', zone: 'zone-a' },
          { address: '127.0.0.1', port: v2.port, name: 'reviews-v2-b8c4d', zone: 'zone-b' },
        ],
      },
      // (b) one endpoint refuses every connection; retries hide it from callers, not from the page
      orders: {
        lb: 'round_robin',
        outlierDetection: false,
        endpoints: [`127.0.0.1:${closedPort}`, { address: '127.0.0.1', port: orders.port, name: 'orders-0' }],
      },
      // (a) discovery answers, with zero endpoints
      ghost: { file: ghostFile },
    },
    admin: { port: 0 },
  });
  cleanup.push(() => m.close());
  // (d) an inbound server reporting to the mesh's telemetry as the adapters do; /admin is denied
  const inbound = inboundTelemetry(m.mesh);
  const server = createHttpServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] as string;
    const denied = path.startsWith('/admin');
    const span = inbound.start({
      transport: 'http',
      method: req.method ?? 'GET',
      path,
      route: denied ? undefined : path.startsWith('/items/') ? '/items/:id' : undefined,
      headers: req.headers,
    });
    if (denied) {
      res.writeHead(403).end('forbidden');
      span?.end(
        403,
        new MeshError(
          ErrorCodes.FORBIDDEN,
          'RBAC: access denied by policy "deny-admin" (rule 0 matched DENY)',
        ),
      );
      return;
    }
    const status = path.startsWith('/items/') ? 200 : 404;
    res.writeHead(status).end();
    span?.end(status);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const inboundUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return { m, url: m.telemetry.admin?.url as string, closedPort, ghostFile, inboundUrl };
}

describe('admin page in headless Chromium', () => {
  // One browser for these tests; a page each, closed after its test.
  let browser: Promise<Browser> | undefined;
  const newPage = async (options?: Parameters<Browser['newPage']>[0]): Promise<Page> => {
    browser ??= chromium.launch({
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
    const page = await (await browser).newPage(options);
    cleanup.push(() => page.close());
    return page;
  };
  afterAll(async () => {
    if (browser) await (await browser).close();
  });

  it('tells the truth: zero endpoints, a refusing endpoint, healthy ones, inbound denials', async () => {
    const { m, url, closedPort, inboundUrl } = await truthScenario();
    for (let i = 0; i < 6; i++) await (await m.fetch('http://orders/')).text(); // every request succeeds
    for (let i = 0; i < 3; i++) await (await fetch(`${inboundUrl}/items/${i}`)).text();
    await (await fetch(`${inboundUrl}/admin/users?id=1`)).text();
    await (await fetch(`${inboundUrl}/nowhere`)).text();

    const page = await newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${url}?interval=250`);
    await page.waitForSelector('section[data-service="ghost"]');

    // Traffic flows while the page polls: the rate chart fills and the request counter goes up.
    let stop = false;
    const traffic = (async () => {
      while (!stop) await (await m.fetch('http://reviews/')).text();
    })();
    await page.waitForFunction(
      'Number(document.querySelector(\'section[data-service="reviews"] .rate\')?.textContent) > 0',
      undefined,
      { timeout: 15_000 },
    );
    stop = true;
    await traffic;
    const polls = Number(await page.locator('body').getAttribute('data-polls'));
    await page.waitForFunction(`Number(document.body.dataset.polls) > ${polls}`); // a poll after the traffic

    // The header: serving (ready, not draining), and the services that need attention.
    expect(await page.locator('#serving').textContent()).toBe('serving');
    expect(await page.locator('#health').textContent()).toBe('2 services need attention');
    const problems = await page.locator('#problem-list li').allTextContents();
    expect(problems).toEqual([
      expect.stringMatching(/^orders: degraded \(1 of 2 endpoints not healthy \(1 failing\)\)$/),
      expect.stringMatching(/^ghost: down \(discovery reports no endpoints\)$/),
    ]);

    // (a) zero endpoints: down, said why; the closed breaker is a neutral fact, not a green light.
    const ghost = page.locator('section[data-service="ghost"]');
    expect(await ghost.getAttribute('data-health')).toBe('down');
    expect(await ghost.locator('.badge').first().textContent()).toBe('down');
    expect(await ghost.locator('ul.reasons').textContent()).toContain('discovery reports no endpoints');
    expect(await ghost.locator('tbody').textContent()).toBe('no endpoints');
    const breaker = ghost.locator('.badge', { hasText: 'breaker closed' });
    // (a string evaluated in the page: the tests are typed without the DOM library)
    const color = (selector: string) =>
      page.evaluate(`getComputedStyle(document.querySelector(${JSON.stringify(selector)})).color`);
    expect(await breaker.count()).toBe(1);
    expect(await color('section[data-service="ghost"] .badge.closed-breaker')).toBe('rgb(135, 149, 165)'); // --dim
    expect(await color('section[data-service="ghost"] .badge.down')).toBe('rgb(248, 81, 73)'); // --bad
    expect(await ghost.locator('.head').textContent()).toMatch(
      /discovery file sha256:[0-9a-f]{12}, updated \d+ s ago/,
    );

    // (b) the endpoint that refuses connections: failing, with the reason; its neighbour healthy.
    const orders = page.locator('section[data-service="orders"]');
    const refusing = orders.locator(`tr[data-endpoint="127.0.0.1:${closedPort}"]`);
    expect(await refusing.getAttribute('data-state')).toBe('failing');
    const why = (await refusing.locator('td.why').textContent()) ?? '';
    expect(why).toMatch(
      /^(\d+) of \1 attempts in the last minute failed \(\1 could not connect\); last failure: /,
    );
    expect(why).toContain('ECONNREFUSED');
    const ok = orders.locator('tr[data-state="healthy"]');
    expect(await ok.locator('b').textContent()).toBe('orders-0');
    expect(await orders.getAttribute('data-health')).toBe('degraded');

    // (c) healthy endpoints by name, with latency quantiles of their own.
    const reviews = page.locator('section[data-service="reviews"]');
    expect(await reviews.getAttribute('data-health')).toBe('healthy');
    expect(await reviews.locator('tbody tr b').allTextContents()).toEqual([
      'reviews-v1-6d9f7',
      'reviews-v2-b8c4d',
    ]);
    expect(await reviews.locator('tr[data-state="healthy"]').count()).toBe(2);
    const p50 = Number(await reviews.locator('.p50').textContent());
    const p99 = Number(await reviews.locator('.p99').textContent());
    expect(p50).toBeGreaterThan(0);
    expect(p99).toBeGreaterThanOrEqual(p50);
    for (const cell of await reviews.locator('tbody tr td:nth-child(7)').allTextContents())
      expect(Number(cell)).toBeGreaterThan(0);
    // The chart says what it shows, and its axes.
    const chart = reviews.locator('figure.chart');
    expect(await chart.locator('figcaption').textContent()).toBe('requests/s · last 60 s · failed');
    expect(await chart.locator('svg text').allTextContents()).toEqual([
      expect.stringMatching(/^\d+$/),
      '0',
      '-60s',
      'now',
    ]);
    expect(await chart.locator('svg').getAttribute('aria-label')).toMatch(
      /^requests\/s over the last 60 seconds: now \d+ per second, peak \d+$/,
    );

    // (d) the inbound side: requests by route, the denial and why.
    const inbound = page.locator('#inbound');
    expect(await inbound.locator('.in-total').textContent()).toBe('5');
    expect(await inbound.locator('.in-denied').textContent()).toBe('1');
    const items = inbound.locator('tr[data-route="/items/:id"] td');
    expect((await items.allTextContents()).slice(0, 5)).toEqual(['/items/:id', 'http', '3', '0', '3']);
    const noRoute = inbound.locator('tr[data-route="(no route)"] td');
    expect((await noRoute.allTextContents()).slice(0, 6)).toEqual(['(no route)', 'http', '2', '1', '2', '1']);
    const denial = await inbound.locator('table[aria-label="recent denials"] tbody tr td').allTextContents();
    expect(denial.slice(1)).toEqual([
      'GET',
      '/admin/users',
      'anonymous',
      'RBAC: access denied by policy "deny-admin" (rule 0 matched DENY)',
    ]);

    // What a screen reader gets: headings, states and the chart's description.
    const aria = await page.locator('main').ariaSnapshot();
    expect(aria).toContain('heading "ghost"');
    expect(aria).toContain('heading "Inbound"');
    expect(aria).toMatch(/img "requests\/s over the last 60 seconds: now \d+ per second/);

    const shot = join(mkdtempSync(join(tmpdir(), 'meshlet-admin-shot-')), 'admin.png');
    await page.screenshot({ path: shot, fullPage: true });
    if (process.env.MESHLET_KEEP_SCREENSHOT === undefined) cleanup.push(() => rmSync(shot, { force: true }));
    else process.stdout.write(`admin page screenshot: ${shot}\n`);

    // /config_dump and snapshot() carry the same verdicts.
    const dump = (await (await fetch(`${url}config_dump`)).json()) as MeshSnapshot;
    for (const snap of [dump, m.mesh.snapshot()]) {
      const admin = snap.extensions.admin as {
        serving: string;
        services: Record<
          string,
          { health: string; endpoints: Record<string, { state: string; name?: string }> }
        >;
        inbound: { denied: number };
      };
      expect(admin.serving).toBe('serving');
      expect(admin.services.ghost?.health).toBe('down');
      expect(admin.services.orders?.endpoints[`127.0.0.1:${closedPort}`]?.state).toBe('failing');
      expect(admin.inbound.denied).toBe(1);
      expect(snap.services.reviews?.endpoints.map((e) => e.name)).toEqual([
        'reviews-v1-6d9f7',
        'reviews-v2-b8c4d',
      ]);
      expect(snap.services.ghost?.discovery.version).toMatch(/^sha256:[0-9a-f]{12}$/);
    }

    // Draining: the header stops saying the process is serving.
    startDraining(m.mesh);
    await page.waitForFunction('document.getElementById("serving").textContent === "draining"');
    expect(errors).toEqual([]);
  });

  it('asks for the token when the admin server has one, then shows the mesh', async () => {
    const { url } = await setup({ admin: { port: 0, token: 'c2VjcmV0LWFkbWluLXRva2VuLTEyMw==' } });
    const page = await newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const response = await page.goto(`${url}?interval=250`);
    expect(response?.status()).toBe(401);
    await page.waitForSelector('#login:not([hidden])');
    expect(await page.locator('section[data-service]').count()).toBe(0);
    await page.fill('#token', 'not-the-right-token-0000');
    await page.click('#login-form button');
    await page.waitForFunction('document.getElementById("login-error").textContent !== ""');
    expect(await page.locator('#login-error').textContent()).toBe('That token was not accepted.');
    await page.fill('#token', 'c2VjcmV0LWFkbWluLXRva2VuLTEyMw==');
    await page.click('#login-form button');
    await page.waitForSelector('section[data-service="reviews"]');
    expect(await page.locator('#login').isHidden()).toBe(true);
    expect(errors).toEqual([]);
  });

  it('shows each endpoint’s reported load, weight and concurrency limit', async () => {
    const { m, url } = await setup({
      services: {
        reviews: {
          endpoints: [(await startBackendFor(cleanup)).address],
          adaptiveConcurrency: { minRtt: { fixed: '5ms' } },
        },
        ratings: { endpoints: [(await startBackendFor(cleanup)).address] },
      },
    });
    const rt = m.mesh.service('reviews');
    const ep = rt?.endpoints[0];
    if (rt === undefined || ep === undefined) throw new Error('no endpoint');
    rt.reportLoad(ep, orcaLoadReport({ applicationUtilization: 0.7, rpsFractional: 40 }));
    if (ep.load) ep.load.weight = 57; // (what the weighted policy writes when it refreshes)
    await (await m.fetch('http://reviews/')).text(); // the limiter's state exists once it admitted one
    const page = await newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${url}?interval=250`);
    const row = page.locator(`section[data-service="reviews"] tr[data-endpoint="${ep.id}"]`);
    await row.waitFor();
    expect(await row.locator('td.load').textContent()).toBe('70% w 57');
    expect(await row.locator('td.limit').textContent()).toBe(`0 / ${ep.concurrency?.limit}`);
    expect(await row.locator('td.limit span').getAttribute('title')).toMatch(
      /^minRTT 5 ms; refused 0|^minRTT 5 ms, sampleRTT/,
    );
    // An endpoint without reports or a limiter says so rather than showing zeros.
    const plain = page.locator('section[data-service="ratings"] tbody tr').first();
    expect(await plain.locator('td.load').textContent()).toBe('–');
    expect(await plain.locator('td.limit').textContent()).toBe('–');
    expect(errors).toEqual([]);
  });
});

/** A backend stopped by `cleanup` after the test. */
async function startBackendFor(list: Array<() => unknown>): Promise<Backend> {
  const b = await startBackend();
  list.push(() => b.close());
  return b;
}

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
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-prom-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    // The admin server protected by a token file, which Prometheus sends as its bearer token (as
    // the Kubernetes example does).
    const tokenFile = join(dir, 'admin-token');
    writeFileSync(tokenFile, 'cHJvbWV0aGV1cy1zY3JhcGUtdG9rZW4=\n');
    const m = await startMesh(
      {
        services: { reviews: { endpoints: [b.address] } },
        admin: { port: 0, token: { file: tokenFile } },
        telemetry: { metrics: { exemplars: true } },
      },
      { tracerProvider: provider },
    );
    cleanup.push(() => m.close());
    for (let i = 0; i < 5; i++) await (await m.fetch('http://reviews/')).text();
    const target = `127.0.0.1:${m.telemetry.admin?.address.port}`;
    expect((await fetch(`http://${target}/metrics`)).status).toBe(401);

    writeFileSync(
      join(dir, 'prometheus.yml'),
      `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: meshlet\n    authorization:\n      credentials_file: ${tokenFile}\n    static_configs:\n      - targets: ['${target}']\n`,
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

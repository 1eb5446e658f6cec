import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type ConfigIssue,
  checkConfig,
  isMeshError,
  Mesh,
  parseConfig,
  parseConfigText,
} from '@meshlet/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AdminTokenCheck,
  installTelemetry,
  isLoopbackHost,
  type MeshTelemetry,
  parseAdminConfig,
} from '../src/index.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const TOKEN = 'Zm9vYmFyYmF6cXV4LXRlc3QtdG9rZW4=';

async function admin(adminConfig: Record<string, unknown>): Promise<{ tel: MeshTelemetry; port: number }> {
  const mesh = new Mesh(
    parseConfig({ services: { a: { endpoints: ['127.0.0.1:1'] } }, admin: { port: 0, ...adminConfig } }),
  );
  cleanup.push(() => mesh.close());
  const tel = await installTelemetry(mesh);
  await mesh.ready();
  return { tel, port: tel.admin?.address.port as number };
}

/** A raw TCP connection to the admin port (optionally from another loopback address). */
function open(port: number, localAddress?: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, localAddress }, () => resolve(s));
    s.once('error', reject);
    cleanup.push(() => {
      s.destroy();
    });
  });
}

/** Everything the server sends until it closes the connection. */
function untilClosed(s: Socket): Promise<string> {
  return new Promise((resolve) => {
    let data = '';
    s.on('data', (d) => {
      data += d;
    });
    s.on('error', () => {});
    s.once('close', () => resolve(data));
  });
}

/** Sends one keep-alive request on `s` and resolves with the head and body of the answer. */
function request(s: Socket, path: string, headers: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = Buffer.alloc(0);
    const onClose = () => reject(new Error(`closed after ${JSON.stringify(data.toString())}`));
    const onData = (d: Buffer) => {
      data = Buffer.concat([data, d]);
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = /content-length: (\d+)/i.exec(data.subarray(0, end).toString());
      if (len && data.length >= end + 4 + Number(len[1])) {
        s.off('data', onData);
        s.off('close', onClose);
        resolve(data.toString());
      }
    };
    s.on('data', onData);
    s.once('close', onClose);
    const extra = Object.entries({ host: '127.0.0.1', ...headers })
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    s.write(`GET ${path} HTTP/1.1\r\n${extra}\r\n`);
  });
}

function status(response: string): number {
  return Number(response.slice(9, 12));
}

describe('admin server: timeouts and connection caps', () => {
  it('closes a connection that trickles its headers once headersTimeout passes', async () => {
    // requestTimeout is far away: what cuts the client off is the header timeout.
    const { port } = await admin({ headersTimeout: '300ms', requestTimeout: '30s' });
    const s = await open(port);
    const closed = untilClosed(s);
    const started = performance.now();
    s.write('GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    let i = 0;
    const trickle = setInterval(() => {
      if (!s.destroyed) s.write(`X-Slow-${i++}: a\r\n`);
    }, 40);
    cleanup.push(() => clearInterval(trickle));
    const answer = await closed;
    clearInterval(trickle);
    const elapsed = performance.now() - started;
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(i).toBeGreaterThan(3); // it did trickle for a while, and was still at it
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(20_000);
  });

  it('closes a connection that sends nothing', async () => {
    const { port } = await admin({ headersTimeout: '200ms', requestTimeout: '30s' });
    const s = await open(port);
    const answer = await untilClosed(s);
    expect(answer === '' || answer.startsWith('HTTP/1.1 408')).toBe(true);
  });

  it('refuses connections beyond maxConnections and accepts again when one closes', async () => {
    const { tel, port } = await admin({ maxConnections: 2, maxConnectionsPerClient: 2 });
    const a = await open(port);
    const b = await open(port);
    // Both are accepted and served (the server has counted them).
    expect(status(await request(a, '/healthz'))).toBe(200);
    expect(status(await request(b, '/healthz'))).toBe(200);
    const c = await open(port);
    const refused = untilClosed(c);
    c.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    expect(await refused).toBe(''); // closed at accept, never answered
    expect(tel.admin?.refusedConnections).toBe(1);

    const gone = untilClosed(a);
    a.destroy();
    await gone;
    // The server sees the close asynchronously: retry until a slot is free (no fixed sleep).
    let answer = '';
    for (let i = 0; i < 50 && answer === ''; i++) {
      const d = await open(port);
      answer = await request(d, '/healthz').catch(() => '');
    }
    expect(status(answer)).toBe(200);
  });

  it('caps connections per client address', async () => {
    const { port } = await admin({ maxConnections: 10, maxConnectionsPerClient: 1 });
    const a = await open(port, '127.0.0.1');
    expect(status(await request(a, '/healthz'))).toBe(200);
    const b = await open(port, '127.0.0.1');
    const refused = untilClosed(b);
    b.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    expect(await refused).toBe('');
    // Another client is not affected.
    const c = await open(port, '127.0.0.2');
    expect(status(await request(c, '/healthz'))).toBe(200);
  });

  it('closes idle keep-alive connections after keepAliveTimeout', async () => {
    const { port } = await admin({ keepAliveTimeout: '150ms' });
    const s = await open(port);
    const closed = untilClosed(s);
    expect(status(await request(s, '/healthz'))).toBe(200);
    await closed; // closed by the server, not by us
    expect(s.destroyed).toBe(true);
  });
});

describe('admin server: bearer token', () => {
  it('requires the token everywhere but /healthz and /ready, and checks it', async () => {
    const { port } = await admin({ token: TOKEN });
    const s = await open(port);
    for (const path of ['/metrics', '/clusters', '/config_dump', '/nope']) {
      const r = await request(s, path);
      expect(status(r), path).toBe(401);
      expect(r).toMatch(/\r\nwww-authenticate: Bearer realm="meshlet-admin"\r\n/i);
      expect(r).not.toContain('http_client'); // no data in the refusal
    }
    const wrong = await request(s, '/metrics', { authorization: `Bearer ${TOKEN.slice(0, -2)}xx` });
    expect(status(wrong)).toBe(401);
    expect(wrong).toMatch(/www-authenticate: Bearer realm="meshlet-admin", error="invalid_token"/i);
    expect(status(await request(s, '/metrics', { authorization: `Bearer ${TOKEN}extra` }))).toBe(401);
    expect(status(await request(s, '/metrics', { authorization: `Basic ${TOKEN}` }))).toBe(401);
    expect(status(await request(s, '/metrics', { authorization: 'Bearer' }))).toBe(401);

    for (const path of ['/metrics', '/clusters', '/config_dump', '/']) {
      const r = await request(s, path, { authorization: `Bearer ${TOKEN}` });
      expect(status(r), path).toBe(200);
    }
    expect(await request(s, '/metrics', { authorization: `bearer ${TOKEN}` })).toContain('meshlet_info');
    // The probes stay open.
    expect(status(await request(s, '/healthz'))).toBe(200);
    expect(status(await request(s, '/ready'))).toBe(200);
    // The page (no data in it) comes with the 401, so a browser can ask for the token.
    const page = await request(s, '/');
    expect(status(page)).toBe(401);
    expect(page).toContain('id="login-form"');
    // Any Host is fine once a token protects the server.
    expect(
      status(await request(s, '/clusters', { host: 'reviews.shop:9901', authorization: `Bearer ${TOKEN}` })),
    ).toBe(200);
  });

  it('reads the token from a file and follows its rotation', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-admin-token-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'token');
    writeFileSync(file, `${TOKEN}\n`); // as `kubectl create secret --from-file` keeps a newline
    const { port } = await admin({ token: { file } });
    const s = await open(port);
    expect(status(await request(s, '/clusters', { authorization: `Bearer ${TOKEN}` }))).toBe(200);
    expect(status(await request(s, '/clusters', { authorization: 'Bearer not-the-token-at-all' }))).toBe(401);

    // Rotation, with a fake clock: the file is looked at again once a second at most.
    let now = 0;
    const problems: string[] = [];
    const check = new AdminTokenCheck(
      { file },
      (m) => problems.push(m),
      () => now,
    );
    const next = 'c2Vjb25kLXRva2VuLWFmdGVyLXJvdGF0aW9u';
    writeFileSync(file, next);
    expect(check.check(`Bearer ${TOKEN}`).ok).toBe(true); // not looked at again yet
    now += 1_000;
    expect(check.check(`Bearer ${TOKEN}`).ok).toBe(false);
    expect(check.check(`Bearer ${next}`).ok).toBe(true);
    // A file that goes bad keeps the last good token: the server never opens up.
    writeFileSync(file, 'short');
    now += 1_000;
    expect(check.check(`Bearer ${next}`).ok).toBe(true);
    expect(check.check('Bearer short').ok).toBe(false);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/at least 16 characters.*keeping the last good token/);
    rmSync(file);
    now += 1_000;
    expect(check.check(`Bearer ${next}`).ok).toBe(true);
    expect(problems[1]).toMatch(/cannot read .*token/);
  });

  it('checks a token given in code as the config parser does', async () => {
    const mesh = new Mesh(parseConfig({}));
    cleanup.push(() => mesh.close());
    const err = await installTelemetry(mesh, { admin: { port: 0, token: { value: 'short' } } }).catch(
      (e: unknown) => e,
    );
    expect(isMeshError(err) && err.code).toBe('MESHLET_ERR_CONFIG');
    expect(String((err as Error).message)).toMatch(/admin\.token: must be at least 16 characters/);
  });

  it('fails to start with MESHLET_ERR_CONFIG naming admin.token.file when the file is missing', async () => {
    const mesh = new Mesh(parseConfig({ admin: { port: 0, token: { file: '/nonexistent/meshlet-token' } } }));
    cleanup.push(() => mesh.close());
    const err = await installTelemetry(mesh).catch((e: unknown) => e);
    expect(isMeshError(err) && err.code).toBe('MESHLET_ERR_CONFIG');
    expect(String((err as Error).message)).toMatch(
      /admin\.token\.file: cannot read \/nonexistent\/meshlet-token/,
    );
  });
});

describe('admin server without a token', () => {
  it('answers only loopback host names when bound to loopback (DNS rebinding)', async () => {
    const { port } = await admin({});
    const s = await open(port);
    expect(status(await request(s, '/clusters', { host: 'attacker.example' }))).toBe(403);
    expect(status(await request(s, '/clusters', { host: `attacker.example:${port}` }))).toBe(403);
    expect(status(await request(s, '/clusters', { host: `localhost:${port}` }))).toBe(200);
    expect(status(await request(s, '/clusters', { host: `127.0.0.1:${port}` }))).toBe(200);
    expect(isLoopbackHost('[::1]:9901')).toBe(true);
    expect(isLoopbackHost('app.localhost')).toBe(true);
    expect(isLoopbackHost('127.1.2.3')).toBe(true);
    expect(isLoopbackHost('localhost.attacker.example')).toBe(false);
    expect(isLoopbackHost('10.0.0.1:9901')).toBe(false);
    expect(isLoopbackHost(undefined)).toBe(false);
  });
});

describe('admin server on a network address', () => {
  it('warns when it listens beyond loopback without a token', async () => {
    const mesh = new Mesh(parseConfig({ admin: { port: 0, host: '0.0.0.0' } }));
    cleanup.push(() => mesh.close());
    const logs: string[] = [];
    mesh.events.on('log', (e) => logs.push(`${e.level} ${e.scope} ${e.message}`));
    await installTelemetry(mesh);
    expect(logs).toEqual([
      expect.stringMatching(/^warn admin admin: listening on 0\.0\.0\.0:\d+ without a token/),
    ]);
    const withToken = new Mesh(parseConfig({ admin: { port: 0, host: '0.0.0.0', token: TOKEN } }));
    cleanup.push(() => withToken.close());
    const quiet: string[] = [];
    withToken.events.on('log', (e) => quiet.push(e.message));
    await installTelemetry(withToken);
    expect(quiet).toEqual([]);
  });
});

describe('admin config', () => {
  it('has conscious defaults', () => {
    const c = parseConfig({ admin: { port: 9901 } }).extensions.admin;
    expect(c).toEqual({
      port: 9901,
      host: '127.0.0.1',
      token: undefined,
      maxConnections: 64,
      maxConnectionsPerClient: 16,
      headersTimeoutMs: 5_000,
      requestTimeoutMs: 10_000,
      keepAliveTimeoutMs: 5_000,
    });
  });

  it('is bound to localhost in the examples, or protected by a token where it cannot be', () => {
    const examples = fileURLToPath(new URL('../../../examples/', import.meta.url));
    const quickstart = parseConfigText(readFileSync(join(examples, 'quickstart/mesh.yaml'), 'utf8'), 'q') as {
      admin: unknown;
    };
    const issues: ConfigIssue[] = [];
    expect(parseAdminConfig(quickstart.admin, 'admin', issues, examples)).toMatchObject({
      host: '127.0.0.1',
      token: undefined,
    });
    // Kubernetes: the kubelet probes and Prometheus come to the pod IP, so it binds 0.0.0.0 and
    // the mounted token protects all but the probes.
    const cm = parseConfigText(readFileSync(join(examples, 'kubernetes/02-config.yaml'), 'utf8'), 'cm') as {
      data: Record<string, string>;
    };
    const k8s = parseConfigText(cm.data['mesh.yaml'] ?? '', 'mesh.yaml') as { admin: unknown };
    expect(parseAdminConfig(k8s.admin, 'admin', issues, '/')).toMatchObject({
      host: '0.0.0.0',
      port: 9901,
      token: { file: '/var/run/meshlet/admin/token' },
    });
    expect(issues).toEqual([]);
  });

  it('resolves a token file against the config directory', () => {
    const c = parseConfig(
      { admin: { port: 1, token: { file: 'secrets/token' } } },
      { baseDir: '/etc/meshlet' },
    );
    expect((c.extensions.admin as { token: unknown }).token).toEqual({ file: '/etc/meshlet/secrets/token' });
  });

  it('names every bad field', () => {
    const { issues } = checkConfig({
      admin: {
        port: 1,
        token: 'short',
        maxConnections: 0,
        maxConnectionsPerClient: 1.5,
        headersTimeout: '20s',
        requestTimeout: '10s',
        keepAliveTimeout: 'soon',
        bind: 'x',
      },
    });
    const text = issues.map((i) => `${i.path}: ${i.message}`).join('\n');
    expect(text).toMatch(/admin\.token: must be at least 16 characters/);
    expect(text).toMatch(/admin\.maxConnections: must be >= 1/);
    expect(text).toMatch(/admin\.maxConnectionsPerClient: must be a whole number/);
    expect(text).toMatch(/admin\.headersTimeout: headersTimeout \(20000ms\) must not exceed requestTimeout/);
    expect(text).toMatch(/admin\.keepAliveTimeout: must be a duration/);
    expect(text).toMatch(/admin\.bind: unknown field/);
    const bad = checkConfig({
      admin: { port: 1, token: 'a token with spaces in it', headersTimeout: '11m' },
    });
    const t2 = bad.issues.map((i) => `${i.path}: ${i.message}`).join('\n');
    expect(t2).toMatch(/admin\.token: must use only the characters of an RFC 6750 bearer token/);
    expect(t2).toMatch(/admin\.headersTimeout: must be between 1ms and 10m/);
    expect(checkConfig({ admin: { port: 1, token: {} } }).issues.map((i) => i.path)).toContain(
      'admin.token.file',
    );
  });
});

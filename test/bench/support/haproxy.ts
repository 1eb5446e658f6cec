import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** An HAProxy process forwarding 127.0.0.1:`port` to one HTTP backend, keep-alive on both sides. */
export interface HaproxyHop {
  readonly port: number;
  readonly origin: string;
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection({ host: '127.0.0.1', port });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** True when the `haproxy` binary is on the PATH. */
export async function haproxyAvailable(): Promise<boolean> {
  return new Promise((resolve) => {
    const p = spawn('haproxy', ['-v'], { stdio: 'ignore' });
    p.once('error', () => resolve(false));
    p.once('exit', (code) => resolve(code === 0));
  });
}

/**
 * Starts HAProxy in the foreground with a generated config in a temp dir: HTTP mode, one thread,
 * `option http-keep-alive` and `http-reuse always`, so that it behaves like a sidecar that keeps
 * its upstream connections open.
 */
export async function startHaproxy(backendPort: number): Promise<HaproxyHop> {
  const dir = await mkdtemp(join(tmpdir(), 'meshlet-haproxy-'));
  const port = await freePort();
  const cfg = join(dir, 'haproxy.cfg');
  await writeFile(
    cfg,
    [
      'global',
      '  nbthread 1',
      '  maxconn 4096',
      'defaults',
      '  mode http',
      '  option http-keep-alive',
      '  http-reuse always',
      '  timeout connect 5s',
      '  timeout client 60s',
      '  timeout server 60s',
      '  timeout http-keep-alive 60s',
      'frontend sidecar',
      `  bind 127.0.0.1:${port}`,
      '  default_backend upstream',
      'backend upstream',
      `  server s1 127.0.0.1:${backendPort} maxconn 1000`,
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    if (await canConnect(port)) return { port, origin: `http://127.0.0.1:${port}`, close };
    await sleep(50);
  }
  await close();
  throw new Error(`haproxy did not start on 127.0.0.1:${port}: ${stderr.trim()}`);
}

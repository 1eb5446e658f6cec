import { spawn } from 'node:child_process';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Mesh, parseConfig } from '@meshlet/core';
import { MeshDispatcher } from '@meshlet/fetch';
import { Agent } from 'undici';
import { installTelemetry, type MeshTelemetry, type TelemetryOptions } from '../src/index.js';

export interface Backend {
  readonly address: string;
  readonly port: number;
  /** Headers of every request received, in order. */
  readonly requests: Array<{
    method: string;
    url: string;
    headers: IncomingHttpHeaders;
    rawHeaders: string[];
  }>;
  /** Statuses to answer with, consumed in order; then 200. */
  statuses: number[];
  close(): Promise<void>;
}

/** A real HTTP server on 127.0.0.1, port 0. */
export async function startBackend(): Promise<Backend> {
  const requests: Backend['requests'] = [];
  const state = { statuses: [] as number[] };
  const server: Server = createServer((req, res) => {
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
    });
    const status = state.statuses.shift() ?? 200;
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end(`status ${status}`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    address: `127.0.0.1:${port}`,
    port,
    requests,
    get statuses() {
      return state.statuses;
    },
    set statuses(v: number[]) {
      state.statuses = v;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export interface TestMesh {
  readonly mesh: Mesh;
  readonly dispatcher: MeshDispatcher;
  readonly telemetry: MeshTelemetry;
  fetch(url: string, init?: RequestInit): Promise<Response>;
  close(): Promise<void>;
}

/** A core Mesh with the fetch dispatcher and telemetry wired as createMesh does it. */
export async function startMesh(raw: unknown, options: TelemetryOptions = {}): Promise<TestMesh> {
  const mesh = new Mesh(parseConfig(raw, { env: {} }));
  const passthrough = new Agent();
  const dispatcher = new MeshDispatcher(mesh, { passthrough });
  mesh.onClose(async () => {
    await dispatcher.close();
    await passthrough.close();
  });
  const telemetry = await installTelemetry(mesh, options);
  await mesh.ready();
  return {
    mesh,
    dispatcher,
    telemetry,
    fetch: (url, init) => fetch(url, { ...init, dispatcher } as unknown as RequestInit),
    close: () => mesh.close(),
  };
}

/** Runs a command with `input` on stdin; resolves with its exit code and output. */
export function run(cmd: string, args: string[], input: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      out += d;
    });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, out }));
    p.stdin.end(input);
  });
}

/** Value of the first sample line matching `name{…labels…}` (all given labels must match). */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const body = m[3] ?? '';
    const got: Record<string, string> = {};
    for (const lm of body.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) got[lm[1] as string] = lm[2] as string;
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[4]);
  }
  return undefined;
}

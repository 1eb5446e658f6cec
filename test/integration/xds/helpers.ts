import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface NamedServer {
  readonly name: string;
  readonly port: number;
  readonly address: string;
  hits: number;
  close(): Promise<void>;
}

/** A loopback HTTP server that answers every request with its own name (and counts them). */
export async function startNamed(name: string): Promise<NamedServer> {
  const state = { hits: 0 };
  const server: Server = createServer((req, res) => {
    state.hits++;
    req.resume();
    res.setHeader('x-server', name);
    res.end(name);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    name,
    port,
    address: `127.0.0.1:${port}`,
    get hits() {
      return state.hits;
    },
    set hits(v: number) {
      state.hits = v;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** An inline gRPC bootstrap naming `servers` in order, as `GRPC_XDS_BOOTSTRAP_CONFIG` holds it. */
export function bootstrapJson(servers: string[], node = 'test-node'): string {
  return JSON.stringify({
    xds_servers: servers.map((s) => ({
      server_uri: s,
      channel_creds: [{ type: 'insecure' }],
      server_features: ['xds_v3'],
    })),
    node: { id: node, cluster: 'test', locality: { zone: 'z1' } },
  });
}

/** Waits until `fn` returns true, checking on every event-loop turn (bounded by `ms`). */
export async function until(
  fn: () => boolean | Promise<boolean>,
  ms = 5_000,
  what = 'condition',
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

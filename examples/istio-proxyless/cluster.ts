/**
 * A stand-in for the cluster, to run app.ts without Kubernetes or Istio: the three reviews
 * versions (HTTP servers answering `{"version":"v1"}` …) and meshlet's control plane serving
 * local-mesh.yaml — the routing of deployment.yaml's VirtualService and DestinationRule — in
 * istiod's place. Prints the GRPC_XDS_BOOTSTRAP_CONFIG for app.ts.
 *
 * Ports: reviews on 9081-9083 and the control plane on 18000 (REVIEWS_PORT=0 and XDS_PORT=0 pick
 * free ones; the endpoints in local-mesh.yaml are replaced by the real addresses).
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startControlPlane } from '@meshlet/control-plane';
import { parse } from 'yaml';

function reviews(version: string, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ version, path: req.url }));
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

const base = process.env.REVIEWS_PORT === '0' ? 0 : 9081;
const servers = await Promise.all(['v1', 'v2', 'v3'].map((v, i) => reviews(v, base && base + i)));
const config = parse(readFileSync(new URL('./local-mesh.yaml', import.meta.url), 'utf8')) as {
  services: Record<string, { endpoints?: string[] }>;
};
servers.forEach((s, i) => {
  const svc = config.services[`reviews-v${i + 1}`];
  if (svc) svc.endpoints = [`127.0.0.1:${(s.address() as AddressInfo).port}`];
});
const cp = await startControlPlane({ config, port: Number(process.env.XDS_PORT ?? 18000) });

const bootstrap = {
  xds_servers: [{ server_uri: cp.address, channel_creds: [{ type: 'insecure' }] }],
  node: { id: 'productpage' },
};
console.log(`reviews v1, v2, v3 on ${servers.map((s) => (s.address() as AddressInfo).port).join(', ')}`);
console.log(`control plane on ${cp.address}`);
console.log(`GRPC_XDS_BOOTSTRAP_CONFIG='${JSON.stringify(bootstrap)}'`);

const stop = async () => {
  await cp.close();
  for (const s of servers) s.close();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);

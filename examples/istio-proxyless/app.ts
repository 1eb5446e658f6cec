/**
 * The productpage side of Bookinfo, proxyless: with GRPC_XDS_BOOTSTRAP set by Istio's agent,
 * `createMesh()` turns xDS on, and `http://reviews.default.svc.cluster.local:9080/…` resolves
 * through the LDS listener of that name (gRPC's `xds:///` convention) — routes, weighted subsets,
 * retries, timeouts and outlier detection come from istiod. See README.md to run it locally.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMesh } from 'meshlet';

const REVIEWS = process.env.REVIEWS_URL ?? 'http://reviews.default.svc.cluster.local:9080';

// mTLS with the certificates Istio's agent writes (cert-chain.pem, key.pem, root-cert.pem).
const certDir = process.env.ISTIO_CERT_DIR;
const mesh = await createMesh(certDir ? { tls: { dir: certDir } } : {});
await mesh.ready();

const server = createServer(async (req, res) => {
  try {
    const user = req.headers['end-user'];
    const upstream = await mesh.fetch(`${REVIEWS}/reviews/0`, {
      headers: typeof user === 'string' ? { 'end-user': user } : {},
    });
    res.writeHead(upstream.status, { 'content-type': 'application/json' });
    res.end(await upstream.text());
  } catch (err) {
    res.writeHead(503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: (err as Error).message, cause: String((err as Error).cause ?? '') }));
  }
});
server.listen(Number(process.env.PORT ?? 9080), process.env.HOST ?? '0.0.0.0', () => {
  console.log(`productpage listening on http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
});

const stop = async () => {
  server.close();
  await mesh.close();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);

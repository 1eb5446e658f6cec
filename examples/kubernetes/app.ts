/**
 * The reviews service of these manifests: a Node.js HTTP service that links meshlet. It loads the
 * mesh config the ConfigMap mounts (EndpointSlice discovery, mTLS with the mounted Secret, the
 * admin server the probes and Prometheus use) and calls ratings — any Service in the namespace —
 * through the mesh, balanced per request over its ready pods.
 */
import { createServer } from 'node:http';
import { createMesh } from 'meshlet';

const mesh = await createMesh(process.env.MESHLET_CONFIG ?? '/etc/meshlet/mesh.yaml');
const RATINGS = process.env.RATINGS_URL ?? 'http://ratings:8080';

const server = createServer(async (req, res) => {
  const id = /^\/reviews\/(\d+)$/.exec(req.url ?? '')?.[1];
  if (id === undefined) {
    res.writeHead(404).end();
    return;
  }
  // ratings is optional: without it (or while it is down) reviews answer without stars.
  const stars = await mesh
    .fetch(`${RATINGS}/ratings/${id}`)
    .then((r) => (r.ok ? r.json() : undefined))
    .catch(() => undefined);
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ id: Number(id), reviews: ['An extremely entertaining play.'], stars }));
});
server.listen(9080);

// On SIGTERM Kubernetes stops routing to the pod; finish what is in flight, then close the mesh.
process.once('SIGTERM', () => server.close(() => void mesh.close()));

// xDS from the packed packages: meshlet's control plane serves a service over ADS; a mesh with an
// `xds:` section fetches through the cluster it learnt (the generated descriptor is in the tarball).
import { once } from 'node:events';
import { createServer } from 'node:http';
import { check, loaded } from './lib.mjs';

const { createMesh } = await import('meshlet');
const { startControlPlane } = await import('@meshlet/control-plane');
const server = createServer((_req, res) => res.end('via xds')).listen(0, '127.0.0.1');
await once(server, 'listening');
const cp = await startControlPlane({
  config: { services: { echo: { endpoints: [`127.0.0.1:${server.address().port}`] } } },
});
const mesh = await createMesh({ xds: { servers: [cp.address] } });
let text = '';
for (let i = 0; i < 100 && text !== 'via xds'; i++) {
  text = await mesh
    .fetch('http://echo/')
    .then((r) => r.text())
    .catch(() => new Promise((r) => setTimeout(() => r(''), 50)));
}
check(text === 'via xds', 'mesh.fetch reaches a service learnt over xDS from the control plane');
check(loaded('protobufjs'), 'xDS loaded protobufjs (and the generated descriptor) when configured');
await mesh.close();
await cp.close();
server.close();

// An HTTP-only service (no grpc-js installed): `import 'meshlet'`, a mesh with a static service, a
// fetch through it. Neither grpc-js nor protobufjs may be loaded; asking for xDS without grpc-js is
// a coded error, not a crash.
import { once } from 'node:events';
import { createServer } from 'node:http';
import { check, loaded } from './lib.mjs';

const { createMesh, isMeshError } = await import('meshlet');
check(loaded('undici'), 'control: the module list sees CommonJS packages loaded through import (undici)');
check(!loaded('@grpc/grpc-js'), "import 'meshlet' does not load @grpc/grpc-js");
check(!loaded('protobufjs'), "import 'meshlet' does not load protobufjs");

const server = createServer((_req, res) => res.end('hello')).listen(0, '127.0.0.1');
await once(server, 'listening');
const mesh = await createMesh({ services: { echo: { endpoints: [`127.0.0.1:${server.address().port}`] } } });
const res = await mesh.fetch('http://echo/');
check((await res.text()) === 'hello', 'mesh.fetch reaches the static service');
await mesh.close();
check(!loaded('@grpc/grpc-js') && !loaded('protobufjs'), 'createMesh and mesh.fetch load neither');

let error;
try {
  const m = await createMesh({ xds: { servers: ['127.0.0.1:1'] } });
  await m.close();
} catch (err) {
  error = err;
}
check(
  isMeshError(error) && error.code === 'MESHLET_ERR_PEER_DEPENDENCY' && /@grpc\/grpc-js/.test(error.message),
  `xDS without grpc-js rejects createMesh with MESHLET_ERR_PEER_DEPENDENCY (${error?.message})`,
);
server.close();

// An HTTP-only service (no grpc-js installed): `import 'meshlet'`, a mesh with a static service, a
// fetch through it. Neither grpc-js nor protobufjs may be loaded; asking for xDS without grpc-js is
// a coded error, not a crash.
import { once } from 'node:events';
import { createServer } from 'node:http';
import { check, loaded, loadedFile } from './lib.mjs';

const { createMesh, isMeshError } = await import('meshlet');
check(loaded('undici'), 'control: the module list sees CommonJS packages loaded through import (undici)');
check(!loaded('@grpc/grpc-js'), "import 'meshlet' does not load @grpc/grpc-js");
check(!loaded('protobufjs'), "import 'meshlet' does not load protobufjs");
// What loads when first needed (docs/install.md, "What loads when"): undici's entry point (its
// fetch, WebSocket, cache, mock) on the first mesh.fetch, its connection classes with the first
// mesh; yaml when a file is read; prom-client and the OpenTelemetry API with the first mesh.
check(!loadedFile('undici/index.js'), "import 'meshlet' does not load undici's entry point");
check(
  !loadedFile('undici/lib/dispatcher/pool.js'),
  "import 'meshlet' does not load undici's connection classes",
);
check(!loaded('yaml'), "import 'meshlet' does not load yaml");
check(!loaded('prom-client'), "import 'meshlet' does not load prom-client");
check(!loaded('@opentelemetry/api'), "import 'meshlet' does not load @opentelemetry/api");

const server = createServer((_req, res) => {
  res.setHeader('x-from', 'echo');
  res.end('hello');
}).listen(0, '127.0.0.1');
await once(server, 'listening');
const mesh = await createMesh({ services: { echo: { endpoints: [`127.0.0.1:${server.address().port}`] } } });
check(loadedFile('undici/lib/dispatcher/pool.js'), "createMesh loads undici's connection classes");
check(!loadedFile('undici/index.js'), "createMesh does not load undici's entry point");
check(!loaded('yaml'), 'createMesh with a config object does not load yaml');
const res = await mesh.fetch('http://echo/');
check(loadedFile('undici/index.js'), "the first mesh.fetch loads undici's fetch (its entry point)");
check((await res.text()) === 'hello', 'mesh.fetch reaches the static service');
// Node's own global fetch (undici 6 on Node 20, 7 on 24, 8 on 26, not this app's copy) through
// the mesh: its response headers included (undici 8 reads them from its handler's controller).
const uninstall = mesh.installGlobalDispatcher();
const viaGlobal = await globalThis.fetch('http://echo/');
check(
  viaGlobal.status === 200 &&
    viaGlobal.headers.get('x-from') === 'echo' &&
    (await viaGlobal.text()) === 'hello',
  `Node ${process.versions.node}'s global fetch through the mesh gets the response and its headers`,
);
uninstall();
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

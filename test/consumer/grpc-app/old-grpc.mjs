// grpc-js older than meshlet supports (1.13): createMesh still works (HTTP), logs a warning with
// the code, and `mesh:` calls fail UNAVAILABLE naming the problem; attachGrpc is a coded error. Never an
// uncaught exception (grpc-js 1.13 with meshlet's 1.14 resolver threw from a setImmediate).
import { once } from 'node:events';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { check } from './lib.mjs';

process.on('uncaughtException', (err) => {
  console.error(`FAIL: uncaught exception: ${err?.stack ?? err}`);
  process.exit(1);
});
const warnings = [];
const logger = {
  debug() {},
  info() {},
  warn: (obj, msg) => warnings.push({ ...obj, msg }),
  error: (obj, msg) => warnings.push({ ...obj, msg }),
};

const version = createRequire(import.meta.url)('@grpc/grpc-js/package.json').version;
const grpc = await import('@grpc/grpc-js');
const { createMesh } = await import('meshlet');
const { EchoClient, say, startEcho } = await import('./echo-server.mjs');
const http = createServer((_req, res) => res.end('ok')).listen(0, '127.0.0.1');
await once(http, 'listening');
const echo = await startEcho('a');
const mesh = await createMesh(
  {
    services: {
      web: { endpoints: [`127.0.0.1:${http.address().port}`] },
      echo: { endpoints: [`127.0.0.1:${echo.port}`] },
    },
  },
  { logger },
);
check(
  (await (await mesh.fetch('http://web/')).text()) === 'ok',
  `grpc-js ${version}: createMesh works and HTTP goes through`,
);
check(
  warnings.some((w) => w.code === 'MESHLET_ERR_PEER_DEPENDENCY' && w.msg.includes(version)),
  `the mesh's logger got a warning naming the problem (${warnings.map((w) => w.msg).join('; ')})`,
);
const client = new EchoClient('mesh:///echo', grpc.credentials.createInsecure());
const failure = await say(client, 'hi').then(
  () => undefined,
  (err) => err,
);
check(
  failure?.code === grpc.status.UNAVAILABLE && failure.details.includes('MESHLET_ERR_PEER_DEPENDENCY'),
  `a mesh:/// call fails UNAVAILABLE with the code (${failure?.details})`,
);
client.close();
let attachError;
try {
  const { attachGrpc } = await import('@meshlet/grpc');
  attachGrpc(mesh);
} catch (err) {
  attachError = err;
}
check(
  attachError?.code === 'MESHLET_ERR_PEER_DEPENDENCY',
  `attachGrpc refuses it with a coded error (${attachError?.code ?? attachError?.message})`,
);
await mesh.close();
await echo.close();
http.close();

// A gRPC service with its own @grpc/grpc-js: once a Mesh exists, the application's grpc-js clients
// with `mesh:///echo` targets resolve and balance through it (DESIGN §4).
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { check, loaded } from './lib.mjs';

const { createMesh } = await import('meshlet');
check(
  !loaded('@grpc/grpc-js') && !loaded('protobufjs'),
  "import 'meshlet' loads neither grpc-js nor protobufjs, even with grpc-js installed",
);

const grpc = await import('@grpc/grpc-js');
const { EchoClient, say, startEcho } = await import('./echo-server.mjs');
const version = createRequire(import.meta.url)('@grpc/grpc-js/package.json').version;
const a = await startEcho('a');
const b = await startEcho('b');
const mesh = await createMesh({
  services: { echo: { endpoints: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`], lb: 'round_robin' } },
});
const client = new EchoClient('mesh:///echo', grpc.credentials.createInsecure());
const from = new Set();
for (let i = 0; i < 6; i++) from.add((await say(client, `hi ${i}`)).from);
check(
  from.size === 2,
  `grpc-js ${version}: mesh:///echo calls are balanced over both endpoints by the mesh (${[...from]})`,
);
const files = Object.keys(createRequire(import.meta.url).cache).filter((f) =>
  f.includes('/node_modules/@grpc/grpc-js/'),
);
const roots = new Set(files.map((f) => f.slice(0, f.indexOf('/node_modules/@grpc/grpc-js/'))));
check(roots.size === 1, `one grpc-js in the process (${[...roots].map((r) => dirname(r))})`);
client.close();
await mesh.close();
await a.close();
await b.close();

/**
 * A meshlet gRPC server in a process of its own (each process has its own load sampler, so two of
 * them report two loads): `Who` answers with the server's name after holding the event loop
 * `workMs`. Forked by tests with `--import tsx --conditions=meshlet-source`:
 *
 *     fork(this file, [name, workMs]) → { port } over IPC; SIGTERM stops it.
 */
import { ServerCredentials, type ServiceDefinition } from '@grpc/grpc-js';
import { processLoad } from '../../packages/core/src/index.js';
import { createMeshServer } from '../../packages/grpc/src/index.js';

const name = process.argv[2] ?? 'server';
const workMs = Number(process.argv[3] ?? 0);
// Reports every 100 ms, so a test sees weights form within a second.
processLoad({ intervalMs: 100 });
const cell = new Int32Array(new SharedArrayBuffer(4));
const bytes = (b: Buffer) => b;
const WHO: ServiceDefinition = {
  Who: {
    path: '/meshlet.test.Echo/Who',
    requestStream: false,
    responseStream: false,
    requestSerialize: bytes,
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: bytes,
  },
};
const ms = createMeshServer({ telemetry: false, health: false });
ms.server.addService(WHO, {
  Who: (_call: unknown, cb: (e: null, r: Buffer) => void) => {
    if (workMs > 0) Atomics.wait(cell, 0, 0, workMs);
    cb(null, Buffer.from(name));
  },
});
ms.server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  process.send?.({ port });
});
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));

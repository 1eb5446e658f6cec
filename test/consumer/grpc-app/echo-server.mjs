// A plain grpc-js server (the application's own grpc-js) with one unary method, JSON on the wire.
import * as grpc from '@grpc/grpc-js';

const json = {
  serialize: (v) => Buffer.from(JSON.stringify(v)),
  deserialize: (b) => JSON.parse(b.toString()),
};
export const echoService = {
  Say: {
    path: '/consumer.Echo/Say',
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
};
export const EchoClient = grpc.makeGenericClientConstructor(echoService, 'Echo');

export async function startEcho(name) {
  const server = new grpc.Server();
  server.addService(echoService, { Say: (call, cb) => cb(null, { from: name, text: call.request.text }) });
  const port = await new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { port, close: () => new Promise((r) => server.tryShutdown(() => r())) };
}

export function say(client, text) {
  return new Promise((resolve, reject) =>
    client.Say({ text }, { deadline: Date.now() + 5000 }, (err, res) => (err ? reject(err) : resolve(res))),
  );
}

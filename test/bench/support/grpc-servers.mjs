// Benchmark gRPC echo servers in a child process: argv = count, baseMs, factor.
// Replies to the parent with { ports }; a message { slow: index | null } makes one server
// `factor` times slower (answered with { ok: true }).
// With WIRE_SESSION=1 (test/bench/support/grpc-wire.ts), a message { sessions: true } is answered
// with each HTTP/2 session's streams and the settings its client sent.
import http2 from 'node:http2';
import { Server, ServerCredentials } from '@grpc/grpc-js';

const sessions = [];
if (process.env.WIRE_SESSION === '1') {
  const create = http2.createServer;
  http2.createServer = (...args) => {
    const server = create(...args);
    server.on('session', (session) => {
      const s = { remotePort: session.socket?.remotePort, streams: 0, maxInFlight: 0, inFlight: 0, session };
      sessions.push(s);
      session.on('stream', (stream) => {
        s.streams++;
        s.inFlight++;
        if (s.inFlight > s.maxInFlight) s.maxInFlight = s.inFlight;
        stream.once('close', () => s.inFlight--);
      });
    });
    return server;
  };
}

const count = Number(process.argv[2] ?? 1);
const baseMs = Number(process.argv[3] ?? 0);
const factor = Number(process.argv[4] ?? 20);
let slow = null;

const json = (v) => Buffer.from(JSON.stringify(v));
const parse = (b) => JSON.parse(b.toString());
const def = {
  Echo: {
    path: '/test.Echo/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: json,
    requestDeserialize: parse,
    responseSerialize: json,
    responseDeserialize: parse,
    originalName: 'echo',
  },
};

const ports = [];
for (let i = 0; i < count; i++) {
  const server = new Server();
  server.addService(def, {
    Echo: (call, cb) => {
      const delay = baseMs * (slow === i ? factor : 1);
      const reply = { text: call.request.text, server: `s${i}` };
      if (delay > 0) setTimeout(() => cb(null, reply), delay);
      else cb(null, reply);
    },
  });
  const port = await new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  ports.push(port);
}
process.on('message', (m) => {
  if (m?.sessions) {
    process.send(
      sessions.map(({ session, ...s }) => ({
        ...s,
        remoteSettings: session.remoteSettings,
        localSettings: session.localSettings,
      })),
    );
  } else if (m && 'slow' in m) {
    slow = m.slow;
    process.send({ ok: true });
  }
});
process.on('SIGTERM', () => process.exit(0));
process.send({ ports });

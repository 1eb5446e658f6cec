// Benchmark gRPC echo servers in a child process: argv = count, baseMs, factor.
// Replies to the parent with { ports }; a message { slow: index | null } makes one server
// `factor` times slower (answered with { ok: true }).
// With WIRE_SESSION=1 (test/bench/support/grpc-wire.ts), a message { sessions: true } is answered
// with each HTTP/2 session's streams and the settings its client sent. With WIRE_FRAMES=1 each
// server is reached through a frame-counting TCP relay (its port is the one reported), and a
// message { frames: true } is answered with the HTTP/2 frames each way, by type, summed over the
// connections.
import http2 from 'node:http2';
import net from 'node:net';
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

/** Counts the HTTP/2 frames of one direction of a connection (after the client's preface). */
class FrameCounter {
  constructor(preface, totals) {
    this.skip = preface; // bytes to pass over: the preface, then each frame's payload
    this.head = Buffer.alloc(9);
    this.have = 0; // bytes of the current frame header read so far
    this.totals = totals;
  }
  feed(chunk) {
    let i = 0;
    while (i < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i);
        this.skip -= n;
        i += n;
        continue;
      }
      const n = Math.min(9 - this.have, chunk.length - i);
      chunk.copy(this.head, this.have, i, i + n);
      this.have += n;
      i += n;
      if (this.have === 9) {
        this.have = 0;
        const type = FRAME_TYPES[this.head[3]] ?? `type${this.head[3]}`;
        this.totals[type] = (this.totals[type] ?? 0) + 1;
        this.skip = this.head.readUIntBE(0, 3);
      }
    }
  }
}
const FRAME_TYPES = [
  'DATA',
  'HEADERS',
  'PRIORITY',
  'RST_STREAM',
  'SETTINGS',
  'PUSH_PROMISE',
  'PING',
  'GOAWAY',
  'WINDOW_UPDATE',
  'CONTINUATION',
];
const frames = { toServer: {}, toClient: {} };

async function relay(port) {
  const server = net.createServer((c) => {
    const u = net.connect(port, '127.0.0.1');
    c.setNoDelay(true);
    u.setNoDelay(true);
    const up = new FrameCounter(24, frames.toServer);
    const down = new FrameCounter(0, frames.toClient);
    c.on('data', (d) => {
      up.feed(d);
      u.write(d);
    });
    u.on('data', (d) => {
      down.feed(d);
      c.write(d);
    });
    c.on('close', () => u.destroy());
    u.on('close', () => c.destroy());
    c.on('error', () => {});
    u.on('error', () => {});
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server.address().port;
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
  ports.push(process.env.WIRE_FRAMES === '1' ? await relay(port) : port);
}
process.on('message', (m) => {
  if (m?.frames) {
    process.send({ frames });
  } else if (m?.sessions) {
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

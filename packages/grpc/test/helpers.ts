import {
  type Client,
  type handleUnaryCall,
  makeGenericClientConstructor,
  Server,
  ServerCredentials,
  type ServerOptions,
  type ServiceDefinition,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { Mesh, parseConfig } from '@meshlet/core';
import { attachGrpc } from '../src/index.js';

export interface EchoRequest {
  text: string;
  delayMs?: number;
}
export interface EchoReply {
  text: string;
  server: string;
  deadline?: number | undefined;
  timeout?: string | undefined;
}

const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const parse = (b: Buffer) => JSON.parse(b.toString());

/**
 * `Echo` is not idempotent; `Get` (the same handler) is marked idempotent the way
 * @grpc/proto-loader gives a proto's `option idempotency_level = IDEMPOTENT` (method options).
 */
/** A unary method of JSON messages (`options`: the method options a proto would give). */
export const unary = (path: string, originalName: string, options?: object) => ({
  path,
  requestStream: false,
  responseStream: false,
  requestSerialize: json,
  requestDeserialize: parse,
  responseSerialize: json,
  responseDeserialize: parse,
  originalName,
  ...(options === undefined ? {} : { options }),
});

export const echoDefinition: ServiceDefinition = {
  Echo: unary('/test.Echo/Echo', 'echo'),
  Get: unary('/test.Echo/Get', 'get', { idempotency_level: 'IDEMPOTENT' }),
};

export const EchoClient = makeGenericClientConstructor(echoDefinition, 'Echo');
type UnaryMethod = (
  req: EchoRequest,
  opts: object,
  cb: (err: ServiceError | null, res?: EchoReply) => void,
) => unknown;
export type EchoClientType = Client & { echo: UnaryMethod; get: UnaryMethod };

function call(method: 'echo' | 'get', client: Client, req: EchoRequest, options: object): Promise<EchoReply> {
  return new Promise((resolve, reject) => {
    (client as EchoClientType)[method](req, options, (err, res) =>
      err ? reject(err) : resolve(res as EchoReply),
    );
  });
}

/** A call of the non-idempotent method. */
export function echo(client: Client, req: EchoRequest, options: object = {}): Promise<EchoReply> {
  return call('echo', client, req, options);
}

/** A call of the idempotent method. */
export function get(client: Client, req: EchoRequest, options: object = {}): Promise<EchoReply> {
  return call('get', client, req, options);
}

export interface TestServer {
  readonly server: Server;
  readonly port: number;
  readonly name: string;
  calls: number;
  /** When set, every call fails with this status. */
  failWith: number | undefined;
  /** Extra delay for every call (ms). */
  delayMs: number;
}

export async function startEchoServer(
  name: string,
  opts: {
    server?: Server;
    serverOptions?: ServerOptions;
    handler?: handleUnaryCall<EchoRequest, EchoReply>;
  } = {},
): Promise<TestServer> {
  const server = opts.server ?? new Server(opts.serverOptions);
  const ts: TestServer = { server, port: 0, name, calls: 0, failWith: undefined, delayMs: 0 };
  const handler: handleUnaryCall<EchoRequest, EchoReply> =
    opts.handler ??
    ((call, cb) => {
      ts.calls++;
      if (ts.failWith !== undefined) {
        cb({ code: ts.failWith, details: `${name} fails` });
        return;
      }
      const delay = (call.request.delayMs ?? 0) + ts.delayMs;
      const reply = () =>
        cb(null, {
          text: call.request.text,
          server: name,
          deadline: (() => {
            const d = call.getDeadline();
            const ms = d instanceof Date ? d.getTime() : d;
            return Number.isFinite(ms) ? ms : undefined;
          })(),
        });
      if (delay > 0) setTimeout(reply, delay);
      else reply();
    });
  server.addService(echoDefinition, { Echo: handler, Get: handler });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  (ts as { port: number }).port = port;
  return ts;
}

export function stopServer(s: TestServer | Server): Promise<void> {
  const server = s instanceof Server ? s : s.server;
  return new Promise((resolve) => {
    server.forceShutdown();
    resolve();
  });
}

export async function meshFor(
  services: Record<string, unknown>,
  opts: { name?: string; defaults?: Record<string, unknown> } = {},
): Promise<Mesh> {
  const mesh = new Mesh(parseConfig({ services, ...(opts.defaults ? { defaults: opts.defaults } : {}) }));
  attachGrpc(mesh, { name: opts.name });
  await mesh.ready();
  return mesh;
}

export { status };

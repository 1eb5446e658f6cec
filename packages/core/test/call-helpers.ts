import { type AttemptFailure, Call, CallAttempt } from '../src/extend.js';
import {
  type EndpointState,
  type MeshEventMap,
  MeshEvents,
  makeEndpoint,
  parseConfig,
  type ServicePolicy,
  ServiceRuntime,
  type ServiceRuntimeOptions,
  type Transport,
} from '../src/index.js';

/**
 * The core pipeline against a scripted transport: each test plays the wire (what each attempt
 * did) and checks what the pipeline decided — retry where, when, or deliver — and what it
 * recorded against the endpoints, the breaker and the budget.
 */
export class FakeAttempt extends CallAttempt {}

export class FakeCall extends Call<FakeAttempt> {
  readonly sent: FakeAttempt[] = [];
  readonly aborted: Array<[FakeAttempt, Error]> = [];
  delivered: Error | undefined = undefined;
  replay = true;
  readonly method: string;
  readonly path = '/x';
  readonly authority = 'svc';

  constructor(
    rt: ServiceRuntime | undefined,
    transport: Transport,
    idempotent: boolean,
    method = 'GET',
    policy?: ServicePolicy,
  ) {
    super(rt, policy, transport, idempotent);
    this.method = method;
  }
  /** A transport that routes at start (gRPC on its metadata). */
  route(rt: ServiceRuntime, policy?: ServicePolicy, idempotent = false): void {
    this.retarget(rt, policy);
    if (idempotent) this.markIdempotent();
  }
  /** gRPC: a mesh error is delivered with a code of its own. */
  statusOfErrors: number | undefined = undefined;
  protected override errorStatus(): number | undefined {
    return this.statusOfErrors;
  }
  header(): string | undefined {
    return undefined;
  }
  protected createAttempt(ep: EndpointState, index: number): FakeAttempt {
    return new FakeAttempt(ep, index);
  }
  protected send(att: FakeAttempt): void {
    this.sent.push(att);
  }
  protected abort(att: FakeAttempt, reason: Error): void {
    this.aborted.push([att, reason]);
  }
  protected deliverError(error: Error): void {
    this.delivered = error;
  }
  protected override replayable(): boolean {
    return this.replay;
  }
  get last(): FakeAttempt {
    const a = this.sent[this.sent.length - 1];
    if (a === undefined) throw new Error('nothing sent');
    return a;
  }
  /** The last attempt got a connection and `failure`. */
  fail(f: AttemptFailure, connected = true): void {
    const a = this.last;
    if (connected) this.connected(a);
    this.failed(a, f, new Error(f.kind));
  }
  /** The last attempt answered `status` and its body ended; true when delivered. */
  answer(status: number): boolean {
    const a = this.last;
    this.connected(a);
    const deliver = this.response(a, status);
    const done = this.complete(a);
    return deliver && done;
  }
}

export const runtimes: ServiceRuntime[] = [];

export function service(policy: Record<string, unknown> = {}, n = 3, options: ServiceRuntimeOptions = {}) {
  const events = new MeshEvents();
  const config = parseConfig({
    services: { svc: { endpoints: ['127.0.0.1:1'], outlierDetection: false, ...policy } },
  });
  const rt = new ServiceRuntime(
    'svc',
    config.services.svc as never,
    'static',
    events,
    () => Date.now(),
    options,
  );
  runtimes.push(rt);
  rt.applyUpdate({
    endpoints: Array.from({ length: n }, (_, i) => makeEndpoint({ address: '10.0.0.1', port: 1000 + i })),
  });
  const retries: Array<MeshEventMap['retry']> = [];
  const requests: Array<MeshEventMap['request']> = [];
  const attempts: Array<MeshEventMap['attempt']> = [];
  events.on('retry', (e) => retries.push(e));
  events.on('request', (e) => requests.push(e));
  events.on('attempt', (e) => attempts.push(e));
  return { rt, retries, requests, attempts };
}

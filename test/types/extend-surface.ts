/**
 * Compiled by `pnpm typecheck`, never run: proves that a transport and a load-balancing policy
 * can be written against `@meshlet/core/extend` alone (the surface docs/architecture.md's
 * "Writing a transport" walks through), and that the application entry point `@meshlet/core`
 * does not offer the pipeline's internals.
 */
import type * as root from '@meshlet/core';
import {
  AttemptFailures,
  allocateEndpointSlot,
  Call,
  CallAttempt,
  type CallHook,
  type EndpointState,
  ErrorCodes,
  type LoadBalancerFactory,
  type Mesh,
  MeshError,
  type PickResult,
  registerLoadBalancer,
  type ServiceRuntime,
  statusOutcome,
} from '@meshlet/core/extend';

/** What a transport keeps per endpoint: an array slot, obtained once. */
const CONNECTION_SLOT = allocateEndpointSlot();

interface Wire {
  send(address: string, body: string, done: (status: number | Error) => void): void;
}

class EchoAttempt extends CallAttempt {}

/** A transport: only the wire; deadline, breaker, thresholds, pick, retries are the pipeline's. */
export class EchoCall extends Call<EchoAttempt> {
  readonly method = 'ECHO';
  readonly path: string;
  readonly authority: string;
  readonly #body: string;
  readonly #done: (result: number | Error) => void;

  constructor(rt: ServiceRuntime, path: string, body: string, done: (result: number | Error) => void) {
    super(rt, undefined, 'http', true);
    this.path = path;
    this.authority = rt.name;
    this.#body = body;
    this.#done = done;
  }
  header(): string | undefined {
    return undefined;
  }
  protected createAttempt(ep: EndpointState, index: number): EchoAttempt {
    return new EchoAttempt(ep, index);
  }
  protected send(att: EchoAttempt): void {
    const wire = att.endpoint.slots[CONNECTION_SLOT] as Wire;
    this.connected(att);
    wire.send(att.endpoint.endpoint.address, this.#body, (r) => {
      if (r instanceof Error) this.failed(att, AttemptFailures.reset, r);
      else if (this.response(att, r) && this.complete(att)) this.#done(r);
      else this.complete(att);
    });
  }
  protected abort(_att: EchoAttempt, _reason: Error): void {}
  protected deliverError(error: Error): void {
    this.#done(error);
  }
}

export function echo(mesh: Mesh, service: string, body: string): Promise<number> {
  const rt = mesh.service(service);
  if (rt === undefined) return Promise.reject(new MeshError(ErrorCodes.UNKNOWN_SERVICE, service));
  return new Promise((resolve, reject) => {
    new EchoCall(rt, '/', body, (r) => (r instanceof Error ? reject(r) : resolve(r))).begin();
  });
}

/** An observer (what telemetry implements). */
export const countingHook: CallHook = {
  start: (call) => ({
    end: (outcome, status) => {
      void [call.service.name, outcome, status, statusOutcome(call.transport, status ?? 0)];
    },
  }),
};

/** A policy, registered like the built-ins. */
const first: LoadBalancerFactory<undefined> = {
  name: 'first_endpoint',
  parseConfig: () => undefined,
  create: () => ({
    update: (eps) => ({ pick: (): PickResult => (eps[0] as EndpointState).picked }),
  }),
};
registerLoadBalancer(first);

// The application entry point keeps what applications use and not the pipeline's internals.
type NotInRoot<K extends string> = K extends keyof typeof root ? never : true;
export const rootIsCurated: [
  NotInRoot<'Call'>,
  NotInRoot<'CallAttempt'>,
  NotInRoot<'AttemptFailures'>,
  NotInRoot<'allocateEndpointSlot'>,
  NotInRoot<'RuntimeHooks'>,
] = [true, true, true, true, true];
// …while what an application does use is still there.
export type RootKeeps = [typeof root.Mesh, typeof root.parseConfig, typeof root.MeshError, root.CallHook];

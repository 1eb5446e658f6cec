import { experimental, Metadata, type StatusObject, status } from '@grpc/grpc-js';
import {
  isMeshError,
  type RouteRequest,
  type Router,
  type RouteTarget,
  type ServicePolicy,
} from '@meshlet/core';
import { CallTag } from './call-tag.js';
import { MeshCall } from './mesh-call.js';
import { grpcStatusOfHttp, metadataHeader } from './metadata.js';

type ConfigSelector = experimental.ConfigSelector;
type CallConfig = ReturnType<ConfigSelector['invoke']>;
type MethodConfig = CallConfig['methodConfig'];

/** The resolver attribute under which grpc-js takes a channel's config selector. */
export const CONFIG_SELECTOR_KEY = experimental.CHANNEL_ARGS_CONFIG_SELECTOR_KEY;

/**
 * A gRPC call as a router sees it (the same `RouteRequest` mesh fetch builds): method `POST`, the
 * call's method path (`/package.Service/Method`) as the path, and its metadata as the headers.
 */
export class MetadataRouteRequest implements RouteRequest {
  readonly method = 'POST';
  path = '';
  metadata: Metadata | undefined;
  header(name: string): string | undefined {
    return this.metadata === undefined ? undefined : metadataHeader(this.metadata, name);
  }
}

const NO_FILTERS: CallConfig['dynamicFilterFactories'] = [];
const NO_PICK_INFO: CallConfig['pickInformation'] = {};
const PLAIN_METHOD_CONFIG: MethodConfig = { name: [] };

function callConfig(methodConfig: MethodConfig, code: status): CallConfig {
  return { methodConfig, pickInformation: NO_PICK_INFO, status: code, dynamicFilterFactories: NO_FILTERS };
}

/** The config of calls that need nothing from the selector (mesh calls route themselves). */
const PASS: CallConfig = callConfig(PLAIN_METHOD_CONFIG, status.OK);
const UNROUTED: CallConfig = callConfig(PLAIN_METHOD_CONFIG, status.UNAVAILABLE);

function toDuration(ms: number): { seconds: number; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/**
 * Fault injection for a plain client's call (what grpc-js-xds does with its fault filter): the
 * call's metadata is held back `delayMs` before the call goes out; then, with `abort`, the call
 * ends with that status without being sent. The call's deadline keeps running meanwhile.
 */
class FaultFilter extends experimental.BaseFilter {
  readonly #delayMs: number;
  readonly #abort: status | undefined;
  constructor(delayMs: number, abort: status | undefined) {
    super();
    this.#delayMs = delayMs;
    this.#abort = abort;
  }
  override async sendMetadata(metadata: Promise<Metadata>): Promise<Metadata> {
    const md = await metadata;
    await new Promise<void>((resolve) => setTimeout(resolve, this.#delayMs).unref());
    if (this.#abort !== undefined) {
      const st: StatusObject = {
        code: this.#abort,
        details: 'fault injected (abort after delay)',
        metadata: new Metadata(),
      };
      throw st;
    }
    return md;
  }
}

/**
 * The method config of a plain client's call routed to a service with `policy`: the route's
 * timeout, and the route's own retry policy (xDS `retry_on`) as a grpc-js retry policy, as
 * grpc-js-xds does (gRFC A44); without one, grpc-js's own behaviour (transparent retries only).
 */
function methodConfigOf(policy: ServicePolicy): MethodConfig {
  const mc: { -readonly [K in keyof MethodConfig]: MethodConfig[K] } = { name: [] };
  if (policy.timeoutMs > 0) mc.timeout = toDuration(policy.timeoutMs);
  const r = policy.retry;
  const codes = r.grpcCodes;
  if (r.maxRetries > 0 && codes !== undefined && codes.length > 0) {
    mc.retryPolicy = {
      maxAttempts: Math.min(5, r.maxRetries + 1),
      initialBackoff: `${Math.max(0.001, r.backoffBaseMs / 1000)}s`,
      maxBackoff: `${Math.max(0.001, r.backoffMaxMs / 1000)}s`,
      backoffMultiplier: 2,
      retryableStatusCodes: [...codes],
    };
  }
  return mc;
}

/**
 * grpc-js's per-call config selector of a routed `mesh:` channel (what grpc-js-xds uses for xDS
 * routing): it routes each call of a plain grpc-js client by its method path and metadata, records
 * the route target on the call's `CallTag` (which the `meshlet` picker balances over), and turns
 * the route's timeout and retry policy into the call's method config. Mesh calls arrive already
 * routed (by `MeshCall`) and pass through.
 */
export class RoutingConfigSelector implements ConfigSelector {
  readonly #router: Router;
  readonly #request = new MetadataRouteRequest();
  readonly #configs = new WeakMap<ServicePolicy, CallConfig>();

  constructor(router: Router) {
    this.#router = router;
  }

  invoke(methodName: string, metadata: Metadata): CallConfig {
    const opts = metadata.getOptions();
    if (opts instanceof MeshCall) return PASS;
    const req = this.#request;
    req.path = methodName;
    req.metadata = metadata;
    const result = this.#router.route(req);
    req.metadata = undefined;
    if (result === undefined || isMeshError(result)) return UNROUTED;
    const target = result as RouteTarget;
    const abort = target.abortStatus > 0 ? grpcStatusOfHttp(target.abortStatus) : undefined;
    if (abort !== undefined && target.delayMs <= 0) return callConfig(PLAIN_METHOD_CONFIG, abort);
    let tag: CallTag;
    if (opts instanceof CallTag) tag = opts;
    else {
      tag = new CallTag(opts);
      metadata.setOptions(tag);
    }
    tag.target = target;
    const policy = target.policy ?? target.runtime.policy;
    let config = this.#configs.get(policy);
    if (config === undefined) {
      config = callConfig(methodConfigOf(policy), status.OK);
      this.#configs.set(policy, config);
    }
    if (target.delayMs > 0) {
      // A delay (then maybe an abort) for this call: a filter of its own on the route's config.
      const filter = new FaultFilter(target.delayMs, abort);
      return { ...config, dynamicFilterFactories: [{ createFilter: () => filter }] };
    }
    return config;
  }

  unref(): void {
    // Nothing is held beyond the router, which the mesh owns.
  }
}

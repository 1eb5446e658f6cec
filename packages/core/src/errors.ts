/**
 * The one error catalogue of meshlet. Every error the mesh raises is a `MeshError` with a stable
 * `code` from `ErrorCodes`. Codes never change meaning once released; new ones are only added.
 */

export const ErrorCodes = {
  /** The mesh configuration is invalid; `issues` lists every bad field by path. */
  CONFIG: 'MESHLET_ERR_CONFIG',
  /** The service has no endpoint that can take the request (none known, or all failed/ejected). */
  NO_HEALTHY_ENDPOINT: 'MESHLET_ERR_NO_HEALTHY_ENDPOINT',
  /** The host is not a service the mesh knows and passthrough is disabled. */
  UNKNOWN_SERVICE: 'MESHLET_ERR_UNKNOWN_SERVICE',
  /** The call's deadline (overall timeout) expired. */
  TIMEOUT: 'MESHLET_ERR_TIMEOUT',
  /** One attempt exceeded the per-try timeout. */
  PER_TRY_TIMEOUT: 'MESHLET_ERR_PER_TRY_TIMEOUT',
  /** Could not connect to the endpoint (refused, unreachable, TLS handshake failed). */
  CONNECT: 'MESHLET_ERR_CONNECT',
  /** The connection was reset or closed before a full response arrived. */
  RESET: 'MESHLET_ERR_RESET',
  /** The circuit breaker of the service is open; the call failed fast. */
  CIRCUIT_OPEN: 'MESHLET_ERR_CIRCUIT_OPEN',
  /** A concurrency threshold (max requests, max pending, max retries) was reached. */
  OVERLOADED: 'MESHLET_ERR_OVERLOADED',
  /** The retry budget of the service is exhausted; the failure of the last attempt is in `cause`. */
  RETRY_BUDGET_EXHAUSTED: 'MESHLET_ERR_RETRY_BUDGET_EXHAUSTED',
  /** The peer presented an identity (SPIFFE ID) the service does not accept. */
  PEER_IDENTITY: 'MESHLET_ERR_PEER_IDENTITY',
  /** TLS material is missing, invalid or expired. */
  TLS: 'MESHLET_ERR_TLS',
  /** A discovery source failed (the last good endpoints stay in use). */
  DISCOVERY: 'MESHLET_ERR_DISCOVERY',
  /** The caller cancelled the request. */
  CANCELLED: 'MESHLET_ERR_CANCELLED',
  /** The mesh was closed. */
  CLOSED: 'MESHLET_ERR_CLOSED',
  /** An inbound request was denied by an authorization policy. */
  FORBIDDEN: 'MESHLET_ERR_FORBIDDEN',
  /**
   * An inbound request was refused before authorization: its target or Host cannot be read one way
   * only (a malformed escape, `%00`, invalid UTF-8, a rejected escaped slash, conflicting Hosts).
   */
  BAD_REQUEST: 'MESHLET_ERR_BAD_REQUEST',
  /**
   * An inbound request arrived while its server is not serving under the control plane's
   * configuration (gRFC A36): its inbound listener is not known yet, does not exist, was NACKed
   * with no good version, no filter chain matches the connection, or no route takes the request.
   * HTTP 503, gRPC UNAVAILABLE.
   */
  NOT_SERVING: 'MESHLET_ERR_NOT_SERVING',
  /** A control-plane resource was rejected (NACKed). */
  XDS_RESOURCE: 'MESHLET_ERR_XDS_RESOURCE',
  /** A request was rejected by fault injection configured for the route. */
  FAULT_INJECTED: 'MESHLET_ERR_FAULT_INJECTED',
  /** A peer dependency a configured feature needs (`@grpc/grpc-js`) is missing or unsupported. */
  PEER_DEPENDENCY: 'MESHLET_ERR_PEER_DEPENDENCY',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

const MESH_ERROR_BRAND = Symbol.for('meshlet.error');

export interface MeshErrorDetails {
  /** The service the error concerns. */
  service?: string;
  /** The endpoint (`address:port`) the error concerns. */
  endpoint?: string;
  /** Extra machine-readable data. */
  [key: string]: unknown;
}

export class MeshError extends Error {
  readonly code: ErrorCode;
  readonly service: string | undefined;
  readonly endpoint: string | undefined;
  readonly details: MeshErrorDetails;

  constructor(
    code: ErrorCode,
    message: string,
    details: MeshErrorDetails = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'MeshError';
    this.code = code;
    this.service = details.service;
    this.endpoint = details.endpoint;
    this.details = details;
    Object.defineProperty(this, MESH_ERROR_BRAND, { value: true });
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message, ...this.details };
  }
}

/** One problem in a configuration: where (a dotted path such as `services.reviews.lb`) and what. */
export interface ConfigIssue {
  path: string;
  message: string;
}

export class MeshConfigError extends MeshError {
  readonly issues: readonly ConfigIssue[];
  constructor(issues: readonly ConfigIssue[], source?: string) {
    const where = source ? ` in ${source}` : '';
    const list = issues.map((i) => `  - ${i.path || '(root)'}: ${i.message}`).join('\n');
    super(ErrorCodes.CONFIG, `invalid meshlet configuration${where}:\n${list}`, { issues, source });
    this.name = 'MeshConfigError';
    this.issues = issues;
  }
}

/** True for any meshlet error, even one thrown by another installed copy of meshlet. */
export function isMeshError(value: unknown): value is MeshError {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[MESH_ERROR_BRAND] === true
  );
}

/** True when `value` is a meshlet error with the given code. */
export function isMeshErrorCode(value: unknown, code: ErrorCode): value is MeshError {
  return isMeshError(value) && value.code === code;
}

export function isConfigError(value: unknown): value is MeshConfigError {
  return isMeshErrorCode(value, ErrorCodes.CONFIG);
}

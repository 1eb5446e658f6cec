import { ErrorCodes, isMeshError, MeshError } from '@meshlet/core';
import { type AttemptFailure, AttemptFailures } from '@meshlet/core/extend';

const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'EADDRNOTAVAIL',
  'ENOTFOUND',
  'EAI_AGAIN',
  'UND_ERR_CONNECT_TIMEOUT',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'ERR_SSL_WRONG_VERSION_NUMBER',
]);
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'ECONNABORTED']);
/** The endpoint's pool (or client) closed or was destroyed: it left the service. */
const CLOSED_CODES = new Set(['UND_ERR_CLOSED', 'UND_ERR_DESTROYED']);
/** undici's own waits for the endpoint (`headersTimeout`, `bodyTimeout`). */
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);
/**
 * The caller's mistakes, as undici reports them: an invalid argument (a bad header name or value,
 * a bad method or path), an unsupported option (`Expect: 100-continue` over HTTP/1.1), a body
 * whose length contradicts its content-length, a response larger than the caller's
 * `maxResponseSize`. They are the caller's business: undici's own error, never retried, never
 * counted against the endpoint.
 */
const CALLER_CODES = new Set([
  'UND_ERR_INVALID_ARG',
  'UND_ERR_NOT_SUPPORTED',
  'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
  'UND_ERR_RES_EXCEEDED_MAX_SIZE',
  'UND_ERR_INVALID_RETURN_VALUE',
]);

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Classifies an attempt's error from undici in the pipeline's transport-neutral terms.
 * `connected` says whether undici had put the request on a connection (`onConnect`): a failure
 * before that never reached the server.
 */
export function classifyError(err: unknown, connected: boolean): AttemptFailure {
  if (isMeshError(err)) {
    if (err.code === ErrorCodes.PER_TRY_TIMEOUT) return AttemptFailures.perTryTimeout;
    if (err.code === ErrorCodes.TIMEOUT) return AttemptFailures.timeout;
    if (err.code === ErrorCodes.CANCELLED) return AttemptFailures.cancelled;
    if (err.code === ErrorCodes.PEER_IDENTITY || err.code === ErrorCodes.TLS) return AttemptFailures.connect;
  }
  const name = (err as { name?: unknown })?.name;
  if (name === 'AbortError') return AttemptFailures.cancelled;
  const own = codeOf(err);
  if (own !== undefined && CALLER_CODES.has(own)) return AttemptFailures.caller;
  let code = own;
  let cause: unknown = (err as { cause?: unknown })?.cause;
  for (let depth = 0; code === undefined && cause !== undefined && depth < 3; depth++) {
    code = codeOf(cause);
    cause = (cause as { cause?: unknown })?.cause;
  }
  if (code !== undefined) {
    if (CONNECT_CODES.has(code) || code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL'))
      return AttemptFailures.connect;
    if (TIMEOUT_CODES.has(code)) return AttemptFailures.perTryTimeout;
    if (code === 'UND_ERR_ABORTED' || code === 'ABORT_ERR') return AttemptFailures.cancelled;
    if (RESET_CODES.has(code)) return connected ? AttemptFailures.reset : AttemptFailures.connect;
    if (CLOSED_CODES.has(code)) return connected ? AttemptFailures.reset : AttemptFailures.notSent;
  }
  const message = String((err as { message?: unknown })?.message ?? '');
  if (message.includes('REFUSED_STREAM')) return AttemptFailures.refusedStream;
  return connected ? AttemptFailures.transport : AttemptFailures.connect;
}

/**
 * The error the caller gets for a final attempt failure: the caller's own mistakes and
 * cancellations as undici (or the caller) raised them; endpoint failures as a coded `MeshError`
 * naming the service and endpoint, with undici's error as its `cause`.
 */
export function toMeshError(
  err: unknown,
  f: AttemptFailure,
  service: string,
  endpoint: string | undefined,
): Error {
  if (isMeshError(err)) return err;
  const at = endpoint ? ` (endpoint ${endpoint})` : '';
  const reason = (err as Error)?.message ?? String(err);
  switch (f.outcome) {
    case 'connect_failure':
      return new MeshError(
        ErrorCodes.CONNECT,
        `cannot connect to service "${service}"${at}: ${reason}`,
        { service, endpoint },
        { cause: err },
      );
    case 'reset':
      return new MeshError(
        ErrorCodes.RESET,
        `connection to service "${service}"${at} was reset: ${reason}`,
        { service, endpoint },
        { cause: err },
      );
    case 'timeout':
      return new MeshError(
        ErrorCodes.TIMEOUT,
        `service "${service}"${at} timed out: ${reason}`,
        { service, endpoint },
        { cause: err },
      );
    default:
      return err instanceof Error ? err : new Error(reason);
  }
}

import { ErrorCodes, isMeshError, MeshError, type Outcome, type RetryCondition } from '@meshlet/core';

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
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNABORTED']);
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

export interface Classified {
  readonly outcome: Outcome;
  /** The retry condition this failure satisfies, if any. */
  readonly condition: RetryCondition | undefined;
}

const CONNECT: Classified = { outcome: 'connect_failure', condition: 'connect-failure' };
const RESET: Classified = { outcome: 'reset', condition: 'reset' };
const REFUSED_STREAM: Classified = { outcome: 'reset', condition: 'refused-stream' };
const TIMEOUT: Classified = { outcome: 'timeout', condition: undefined };
const PER_TRY: Classified = { outcome: 'timeout', condition: 'per-try-timeout' };
const CANCELLED: Classified = { outcome: 'cancelled', condition: undefined };
const OTHER: Classified = { outcome: 'error', condition: undefined };

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Classifies a transport error from undici. `connected` says whether undici had handed the request
 * to a socket (`onConnect`): an error before that never reached the server.
 */
export function classifyError(err: unknown, connected: boolean): Classified {
  if (isMeshError(err)) {
    if (err.code === ErrorCodes.PER_TRY_TIMEOUT) return PER_TRY;
    if (err.code === ErrorCodes.TIMEOUT) return TIMEOUT;
    if (err.code === ErrorCodes.CANCELLED) return CANCELLED;
    if (err.code === ErrorCodes.PEER_IDENTITY || err.code === ErrorCodes.TLS) return CONNECT;
  }
  const name = (err as { name?: unknown })?.name;
  if (name === 'AbortError') return CANCELLED;
  let code = codeOf(err);
  let cause: unknown = (err as { cause?: unknown })?.cause;
  for (let depth = 0; code === undefined && cause !== undefined && depth < 3; depth++) {
    code = codeOf(cause);
    cause = (cause as { cause?: unknown })?.cause;
  }
  if (code !== undefined) {
    if (CONNECT_CODES.has(code) || code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL')) return CONNECT;
    if (TIMEOUT_CODES.has(code)) return TIMEOUT;
    if (code === 'UND_ERR_ABORTED' || code === 'ABORT_ERR') return CANCELLED;
    if (RESET_CODES.has(code)) return connected ? RESET : CONNECT;
  }
  const message = String((err as { message?: unknown })?.message ?? '');
  if (message.includes('REFUSED_STREAM')) return REFUSED_STREAM;
  return connected ? OTHER : CONNECT;
}

/** Wraps a final transport failure in a coded MeshError naming the service and endpoint. */
export function toMeshError(
  err: unknown,
  c: Classified,
  service: string,
  endpoint: string | undefined,
): Error {
  if (isMeshError(err)) return err;
  const at = endpoint ? ` (endpoint ${endpoint})` : '';
  const reason = (err as Error)?.message ?? String(err);
  switch (c.outcome) {
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

// `@meshlet/grpc/support`: which @grpc/grpc-js this package would use, and whether meshlet supports
// it, found without loading grpc-js (so `meshlet` can ask before it imports `@meshlet/grpc`).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ErrorCodes, MeshError } from '@meshlet/core';

/**
 * The oldest @grpc/grpc-js meshlet works with (the peer range is `^1.14.0`). grpc-js 1.14 changed
 * the resolver listener (a function taking `StatusOr` endpoints, attributes and service config)
 * and the load-balancer helper APIs meshlet's resolver and balancer implement; with 1.12 or 1.13 the
 * first `mesh:` call would throw from inside grpc-js, and 1.10 lacks `experimental.splitHostPort`.
 */
export const GRPC_JS_MIN_VERSION = '1.14.0';
/** The versions meshlet supports: 1.x from `GRPC_JS_MIN_VERSION` on. */
export const GRPC_JS_RANGE = '^1.14.0';

export type GrpcJsSupport =
  | { readonly status: 'supported'; readonly version: string; readonly dir: string }
  /** Installed, but outside `GRPC_JS_RANGE`; `error` says which version and what to do. */
  | {
      readonly status: 'unsupported';
      readonly version: string;
      readonly dir: string;
      readonly error: MeshError;
    }
  /** Not installed where `@meshlet/grpc` can import it. */
  | { readonly status: 'missing'; readonly error: MeshError };

function parse(version: string): [number, number, number] | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(version);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/** Whether `version` is in `GRPC_JS_RANGE` (1.x, at least `GRPC_JS_MIN_VERSION`). */
export function isSupportedGrpcJs(version: string): boolean {
  const v = parse(version);
  const min = parse(GRPC_JS_MIN_VERSION) as [number, number, number];
  if (!v || v[0] !== min[0]) return false;
  return v[1] > min[1] || (v[1] === min[1] && v[2] >= min[2]);
}

/** The directory and version of the grpc-js that `from` resolves (by default: this package's). */
function locate(from: string): { dir: string; version: string } | undefined {
  const require = createRequire(from);
  let main: string;
  try {
    main = require.resolve('@grpc/grpc-js');
  } catch {
    return undefined;
  }
  // From its entry point up to its package.json (which its `exports`, if it ever has one, may hide).
  for (let dir = dirname(main); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === '@grpc/grpc-js') return { dir, version: pkg.version ?? '0.0.0' };
    } catch {}
  }
  return undefined;
}

/**
 * Which @grpc/grpc-js `@meshlet/grpc` (or the module at `from`) would load, and whether meshlet
 * supports it. Never throws and never loads grpc-js.
 */
export function grpcJsSupport(from: string = import.meta.url): GrpcJsSupport {
  if (from === import.meta.url) {
    own ??= check(from);
    return own;
  }
  return check(from);
}

let own: GrpcJsSupport | undefined;

function check(from: string): GrpcJsSupport {
  const found = locate(from);
  if (!found) {
    return {
      status: 'missing',
      error: new MeshError(
        ErrorCodes.PEER_DEPENDENCY,
        `@grpc/grpc-js is not installed (meshlet's gRPC and xDS support use the application's copy: npm install @grpc/grpc-js@${GRPC_JS_RANGE})`,
        { dependency: '@grpc/grpc-js', range: GRPC_JS_RANGE },
      ),
    };
  }
  if (isSupportedGrpcJs(found.version)) return { status: 'supported', ...found };
  return {
    status: 'unsupported',
    ...found,
    error: new MeshError(
      ErrorCodes.PEER_DEPENDENCY,
      `@grpc/grpc-js ${found.version} (${found.dir}) is not supported: meshlet needs ${GRPC_JS_RANGE} (npm install @grpc/grpc-js@${GRPC_JS_RANGE})`,
      { dependency: '@grpc/grpc-js', version: found.version, range: GRPC_JS_RANGE },
    ),
  };
}

interface OldResolverListener {
  onError?(error: { code: number; details: string; metadata: unknown }): void;
}

let placeholder = false;

/**
 * For an installed grpc-js meshlet does not support: registers a `mesh:` resolver that fails every
 * call with `error` (UNAVAILABLE, the message carrying its code), so that `mesh:///…` channels
 * fail clearly instead of falling back to DNS. It speaks both resolver APIs (grpc-js < 1.14: an
 * object with `onError`; 1.14+: a function), and loads grpc-js with `require` (no named imports
 * that an old version could lack). Once per process.
 */
export function registerUnsupportedMeshResolver(support: GrpcJsSupport & { status: 'unsupported' }): void {
  if (placeholder) return;
  placeholder = true;
  const grpc = createRequire(join(support.dir, 'package.json'))(support.dir) as {
    Metadata: new () => unknown;
    experimental: { registerResolver(scheme: string, ctor: unknown): void };
  };
  const details = `${support.error.code}: ${support.error.message}`;
  class UnsupportedResolver {
    readonly #listener: unknown;
    constructor(_target: unknown, listener: unknown) {
      this.#listener = listener;
    }
    updateResolution(): void {
      setImmediate(() => {
        const error = { code: 14 /* UNAVAILABLE */, details, metadata: new grpc.Metadata() };
        const l = this.#listener;
        if (typeof l === 'function') l({ ok: false, error }, {}, null, '');
        else (l as OldResolverListener).onError?.(error);
      });
    }
    destroy(): void {}
    static getDefaultAuthority(target: { path: string }): string {
      return target.path.replace(/^\//, '');
    }
  }
  grpc.experimental.registerResolver('mesh', UnsupportedResolver);
}

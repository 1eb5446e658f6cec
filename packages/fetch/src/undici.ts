/**
 * undici, loaded in parts when each part is first needed instead of on `import 'meshlet'`.
 *
 * undici's entry point (`require('undici')`) loads its whole fetch, WebSocket, EventSource, cache
 * and mock implementations: ~85 ms of CPU and ~18 MB of memory, more than all of meshlet's own
 * modules. meshlet needs, at import, only the `Dispatcher` base class (`MeshDispatcher` extends
 * it); when a dispatcher is built, the connection classes (`Agent`, `Pool`, `buildConnector`);
 * and undici's `fetch` only on the first `mesh.fetch`. So:
 *
 * - the connection parts come from the files undici's own entry point loads them from
 *   (`lib/dispatcher/agent.js`, …), which makes them the very same objects the application gets
 *   from `require('undici')` (one module cache), at about a third of the cost. Those paths are not
 *   undici's public API (undici 7 has no `exports` map, so they resolve); if a release moves one,
 *   the public entry point serves instead, so a layout change costs time, never behaviour. The
 *   tests check each part is identical to the public export at the floor of meshlet's range and at
 *   the newest version (`test/dependency-floors.test.ts`, `packages/fetch/test/undici.test.ts`).
 * - undici's entry point also gives `Dispatcher.prototype` its convenience methods (`request`,
 *   `stream`, `pipeline`, `connect`, `upgrade`, from `lib/api`); the connection parts apply the
 *   same ones, so a `MeshDispatcher` answers `dispatcher.request()` whatever was loaded first.
 * - `fetch` is the public export itself (`require('undici').fetch`), loaded on the first mesh
 *   fetch: mesh fetch stays undici's fetch, exactly.
 *
 * Loaded with `require` (from `createRequire`), which is synchronous: `new MeshDispatcher()` and
 * `dispatch()` stay synchronous. A bundler must therefore leave `undici` external (as it must for
 * `@grpc/grpc-js`, which meshlet finds the same way).
 */
import { createRequire } from 'node:module';
import type * as Undici from 'undici';

const require = createRequire(import.meta.url);

type UndiciModule = typeof Undici;

let whole: UndiciModule | undefined;

/** undici's public entry point (everything it exports). */
export function undici(): UndiciModule {
  whole ??= require('undici') as UndiciModule;
  return whole;
}

type Exports = Record<string, unknown>;

/** A file's `module.exports` when it is a function (a class), else undefined. */
const fn = (m: unknown): unknown => (typeof m === 'function' ? m : undefined);

/**
 * What one file of undici's `lib/` holds (`pick` takes it from the file's `module.exports`, or
 * says undefined when it is not what was expected), or the public export `fallback` names when
 * this undici has no such file or it holds something else.
 */
function part<T>(file: string, pick: (exports: Exports) => unknown, fallback: (u: UndiciModule) => T): T {
  let value: unknown;
  try {
    value = pick(require(`undici/${file}`) as Exports);
  } catch {
    value = undefined;
  }
  return value === undefined ? fallback(undici()) : (value as T);
}

/** undici's `Dispatcher` base class (an EventEmitter; ~3 ms to load). */
export const DispatcherBase: typeof Undici.Dispatcher = part(
  'lib/dispatcher/dispatcher.js',
  fn,
  (u) => u.Dispatcher,
);

/** What a dispatcher needs to open connections. */
export interface UndiciTransport {
  readonly Agent: typeof Undici.Agent;
  readonly Pool: typeof Undici.Pool;
  readonly buildConnector: typeof Undici.buildConnector;
  readonly errors: typeof Undici.errors;
  readonly parseHeaders: typeof Undici.util.parseHeaders;
}

let transport: UndiciTransport | undefined;

/** undici's connection parts, loaded the first time a dispatcher or a connector is built. */
export function undiciTransport(): UndiciTransport {
  if (transport) return transport;
  // What undici's entry point does on load (`Object.assign(DispatcherBase.prototype, api)`): the same
  // functions, so applying them again (here or there) changes nothing. Without lib/api, the entry
  // point itself does it.
  const api = part<Exports | null>(
    'lib/api/index.js',
    (m) => (typeof m.request === 'function' && typeof m.upgrade === 'function' ? m : undefined),
    () => null,
  );
  if (api) Object.assign(DispatcherBase.prototype, api);
  transport = {
    Agent: part('lib/dispatcher/agent.js', fn, (u) => u.Agent),
    Pool: part('lib/dispatcher/pool.js', fn, (u) => u.Pool),
    buildConnector: part('lib/core/connect.js', fn, (u) => u.buildConnector),
    errors: part(
      'lib/core/errors.js',
      (m) => (typeof m.RequestAbortedError === 'function' ? m : undefined),
      (u) => u.errors,
    ),
    parseHeaders: part(
      'lib/core/util.js',
      (m) => fn(m.parseHeaders),
      (u) => u.util.parseHeaders,
    ),
  };
  return transport;
}

/** undici's `fetch` (the public export), loaded on the first call. */
export function undiciFetch(): UndiciModule['fetch'] {
  return undici().fetch;
}

/** The process-wide dispatcher (what undici's and Node's global `fetch` use). */
export interface UndiciGlobal {
  readonly getGlobalDispatcher: typeof Undici.getGlobalDispatcher;
  readonly setGlobalDispatcher: typeof Undici.setGlobalDispatcher;
}

/** undici's global-dispatcher functions (`lib/global.js`, as its entry point exports them). */
export function undiciGlobal(): UndiciGlobal {
  return part<UndiciGlobal>(
    'lib/global.js',
    (m) =>
      typeof m.getGlobalDispatcher === 'function' && typeof m.setGlobalDispatcher === 'function'
        ? m
        : undefined,
    (u) => u,
  );
}

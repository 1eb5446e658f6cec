import { type RouteView, routeView } from '@meshlet/core';

/** The parts of Express (4 and 5) and its router that routing views and route templates are read from. */
export interface ExpressApp {
  enabled?(setting: string): boolean;
  path?(): string;
  /** Express 5 (created on first use). */
  readonly router?: ExpressRouter;
  /** Express 4. */
  readonly _router?: ExpressRouter;
}
interface ExpressRouter {
  readonly stack?: readonly ExpressLayer[];
}
interface ExpressLayer {
  readonly route?: object;
  readonly handle?: { readonly stack?: readonly ExpressLayer[] };
  /** The pattern the layer was created with (router >= 2.3); Express 4 keeps no pattern. */
  readonly rawPath?: unknown;
}
interface ExpressRoute {
  readonly path?: unknown;
}
export interface ExpressRequestLike {
  readonly app?: ExpressApp;
  readonly route?: ExpressRoute;
  readonly baseUrl?: string;
}

let lastApp: ExpressApp | undefined;
let lastView: RouteView | undefined;

/**
 * How the app in front of this request routes: case-insensitively unless `case sensitive routing`
 * is enabled, ignoring one trailing slash unless `strict routing` is, HEAD through GET handlers,
 * on the path the middleware hands on (the normalized one). Read from the app's settings (as its
 * router was created from them), remembered for the last app seen.
 */
export function expressRouteView(req: ExpressRequestLike): RouteView {
  return expressAppRouteView(req.app);
}

/** `expressRouteView` of an app (its settings; Express's defaults when it has none). */
export function expressAppRouteView(app: ExpressApp | undefined): RouteView {
  if (app === lastApp && lastView !== undefined) return lastView;
  const enabled = (s: string) => (typeof app?.enabled === 'function' ? app.enabled(s) : false);
  const view = routeView({
    caseInsensitive: !enabled('case sensitive routing'),
    ignoresTrailingSlash: !enabled('strict routing'),
    headAsGet: true,
  });
  lastApp = app;
  lastView = view;
  return view;
}

function patternText(p: unknown): string {
  if (typeof p === 'string') return p === '/' ? '' : p;
  if (Array.isArray(p)) return `(${p.map(patternText).join('|')})`;
  return String(p);
}

/** The mount patterns leading to `route` in `stack`, each as `a/b` text; every way found. */
function findMounts(
  stack: readonly ExpressLayer[],
  route: object,
  prefix: string,
  out: string[],
  depth: number,
) {
  if (depth > 16) return;
  for (const layer of stack) {
    if (layer.route === route) out.push(prefix);
    else {
      const inner = layer.handle?.stack;
      if (Array.isArray(inner) && layer.rawPath !== undefined) {
        findMounts(inner, route, prefix + patternText(layer.rawPath), out, depth + 1);
      }
    }
  }
}

/** Per route object: the template of its mounts within its app (null: not found, use the route's own path). */
const mountCache = new WeakMap<object, string | null>();

/**
 * The template of the route Express matched, mounts included (`/tenants/:tenant/users/:id`), or
 * undefined when none did (a 404, or a handler mounted with `app.use`). Never the matched path:
 * `req.baseUrl` holds the mount path as matched (`/tenants/acme`), so it is not used; the mount
 * patterns are read from the router's layers (router >= 2.3, Express 5) once per route. Where they
 * cannot be read (Express 4), the route's own path stands alone. Sub-apps add `app.path()`.
 */
export function expressRouteTemplate(req: ExpressRequestLike): string | undefined {
  const route = req.route;
  const p = route?.path;
  if (route === undefined || p === undefined) return undefined;
  const own = patternText(p) || '/';
  const app = req.app;
  const appPath = typeof app?.path === 'function' ? app.path() : '';
  if (!req.baseUrl) return appPath ? appPath + own : own;
  let mounts = mountCache.get(route);
  if (mounts === undefined) {
    const stack = (app?._router ?? app?.router)?.stack; // Express 4's `router` getter throws
    const found: string[] = [];
    if (Array.isArray(stack)) findMounts(stack, route, '', found, 0);
    const distinct = [...new Set(found)].sort();
    mounts =
      distinct.length === 0
        ? null
        : distinct.length === 1
          ? (distinct[0] as string)
          : `(${distinct.join('|')})`;
    mountCache.set(route, mounts);
  }
  return appPath + (mounts ?? '') + own;
}

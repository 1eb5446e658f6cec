// Preloaded (NODE_OPTIONS=--require) by scripts/test-dependency-floors.mjs: vitest's aliases
// (MESHLET_TEST_ALIAS) redirect `import 'undici'`, but meshlet also loads some dependencies with
// `require` (undici's parts, packages/fetch/src/undici.ts), which vitest does not see. This maps
// those requests (`undici`, `undici/lib/…`) to the same floor copy. Only the dependencies meshlet
// requires itself: the others (grpc-js) are found through `createRequire` on purpose, from where an
// application installed them (packages/grpc/src/support.ts), and their tests rely on that.
'use strict';
const Module = require('node:module');
const REQUIRED_BY_MESHLET = ['undici'];
const aliases = JSON.parse(process.env.MESHLET_TEST_ALIAS || '{}');
const names = Object.keys(aliases).filter((name) => REQUIRED_BY_MESHLET.includes(name));
const resolve = Module._resolveFilename;
Module._resolveFilename = function resolveFloor(request, ...rest) {
  for (const name of names) {
    if (request === name || request.startsWith(`${name}/`)) {
      return resolve.call(this, aliases[name] + request.slice(name.length), ...rest);
    }
  }
  return resolve.call(this, request, ...rest);
};

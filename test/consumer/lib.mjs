// Shared by the consumer checks: which packages this process has loaded so far. grpc-js,
// protobufjs and undici are CommonJS, so whether they come in through `import` or `require` they
// are in the CommonJS module cache.
import { createRequire } from 'node:module';

const cache = createRequire(import.meta.url).cache;

/** Whether a file of the npm package `name` (e.g. `@grpc/grpc-js`) has been loaded. */
export function loaded(name) {
  const needle = `/node_modules/${name}/`;
  return Object.keys(cache).some((file) => file.includes(needle));
}

/** Whether the file `path` (e.g. `undici/index.js`) of an npm package has been loaded. */
export function loadedFile(path) {
  const needle = `/node_modules/${path}`;
  return Object.keys(cache).some((file) => file.endsWith(needle));
}

export function check(condition, message) {
  if (!condition) {
    console.error(`FAIL: ${message}`);
    process.exit(1);
  }
  console.log(`ok: ${message}`);
}

// CommonJS consumers: require(esm) of meshlet (Node >= 20.19) and its package.json.
const { check } = require('./lib.cjs');

const meshlet = require('meshlet');
check(typeof meshlet.createMesh === 'function', "require('meshlet').createMesh is a function");
check(typeof meshlet.isMeshError === 'function', "require('meshlet').isMeshError is a function");
const pkg = require('meshlet/package.json');
check(
  pkg.name === 'meshlet' && /^\d+\.\d+\.\d+/.test(pkg.version),
  `require('meshlet/package.json') gives ${pkg.name}@${pkg.version}`,
);
for (const name of ['core', 'fetch', 'telemetry', 'tls', 'kubernetes', 'grpc', 'xds', 'control-plane']) {
  const p = require(`@meshlet/${name}/package.json`);
  check(p.name === `@meshlet/${name}`, `require('@meshlet/${name}/package.json')`);
}

// Self time of a V8 CPU profile (node --cpu-prof) per call, grouped: meshlet's packages, opossum,
// timers, grpc-js, node internals, GC; then meshlet's functions one by one.
// Usage: node test/bench/support/cpuprofile-groups.mjs <file.cpuprofile> <calls> [top]
import fs from 'node:fs';

const [file, callsArg, topArg] = process.argv.slice(2);
if (!file || !callsArg) {
  console.error('usage: cpuprofile-groups.mjs <file.cpuprofile> <calls> [top]');
  process.exit(2);
}
const calls = Number(callsArg);
const top = Number(topArg ?? 40);
const profile = JSON.parse(fs.readFileSync(file, 'utf8'));
const byId = new Map(profile.nodes.map((n) => [n.id, n]));

function groupOf(cf) {
  const u = cf.url;
  if (u.includes('/test/')) return 'benchmark driver';
  if (u.includes('/packages/')) return `meshlet ${u.replace(/.*\/packages\/([^/]+)\/.*/, '$1')}`;
  if (u.includes('opossum')) return 'opossum';
  if (/internal\/timers|node:timers/.test(u)) return 'timers';
  if (u.includes('grpc-js')) return u.includes('deadline.js') ? 'grpc-js deadline' : 'grpc-js';
  if (u.startsWith('node:')) return 'node';
  return cf.functionName.startsWith('(') ? cf.functionName : 'native/other';
}

const groups = new Map();
const fns = new Map();
for (let i = 0; i < profile.samples.length; i++) {
  const cf = byId.get(profile.samples[i]).callFrame;
  const us = profile.timeDeltas[i] ?? 0;
  const g = groupOf(cf);
  groups.set(g, (groups.get(g) ?? 0) + us);
  if (g.startsWith('meshlet') || g === 'opossum' || g === 'timers') {
    const k = `${g} ${cf.functionName || '(anonymous)'}`;
    fns.set(k, (fns.get(k) ?? 0) + us);
  }
}
console.log('self time per call (us), by group');
for (const [k, us] of [...groups].sort((a, b) => b[1] - a[1]))
  console.log(`${(us / calls).toFixed(2).padStart(9)}  ${k}`);
console.log('\nmeshlet, opossum and timer functions');
for (const [k, us] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, top))
  console.log(`${(us / calls).toFixed(3).padStart(9)}  ${k}`);

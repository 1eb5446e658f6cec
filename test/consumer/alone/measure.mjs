// `import 'meshlet'` in an application that installed nothing but meshlet: the time it takes (wall
// and CPU, the latter less disturbed by other load) and the resident memory it adds. Printed for
// the report; timings are never asserted.
const rss0 = process.memoryUsage().rss;
const cpu0 = process.cpuUsage();
const t0 = performance.now();
await import('meshlet');
const ms = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
const rss = (process.memoryUsage().rss - rss0) / 1048576;
console.log(
  JSON.stringify({
    importMs: Number(ms.toFixed(1)),
    cpuMs: Number(((cpu.user + cpu.system) / 1000).toFixed(1)),
    rssMB: Number(rss.toFixed(1)),
  }),
);

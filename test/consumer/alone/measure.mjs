// `import 'meshlet'` in an application that installed nothing but meshlet: the time it takes and
// the resident memory it adds (printed for the report; timings are never asserted).
const rss0 = process.memoryUsage().rss;
const t0 = performance.now();
await import('meshlet');
const ms = performance.now() - t0;
const rss = (process.memoryUsage().rss - rss0) / 1048576;
console.log(JSON.stringify({ importMs: Number(ms.toFixed(1)), rssMB: Number(rss.toFixed(1)) }));

import { performance } from 'node:perf_hooks';
import { createMesh } from '../../../packages/meshlet/src/index.js';
import { getTelemetry } from '../../../packages/telemetry/src/index.js';
import type { BenchSuite, BenchSuiteResult } from '../lib.js';
import {
  median,
  pairedRatio,
  round2,
  round3,
  runInterleaved,
  type Variant,
  type VariantStats,
} from '../support/ab.js';
import { startServerProcess } from '../support/server.js';

/**
 * Telemetry's cost. (1) `mesh.fetch` with metrics and tracing on (no tracer provider registered,
 * so tracing is the no-op path) vs the same mesh with telemetry off, interleaved rounds, target
 * >= 0.97x throughput. (2) A full `/metrics` rendering for 100 services x 10 endpoints with
 * request series for every service, target <= 20 ms.
 */
const suite: BenchSuite = {
  name: 'telemetry',
  inQuick: true,
  async run({ quick }): Promise<BenchSuiteResult> {
    const server = await startServerProcess();
    const endpoints = [`127.0.0.1:${server.port}`];
    const on = await createMesh({ services: { bench: { endpoints } } });
    const offConfig = {
      services: { bench: { endpoints } },
      telemetry: { metrics: { enabled: false }, tracing: { enabled: false } },
    };
    const off = await createMesh(offConfig);
    // A second identical mesh: the off/off ratio is the run's noise floor (A/A control).
    const control = await createMesh(offConfig);
    const results: Record<string, unknown> = {};
    const summary: string[] = [];
    const cpuOff: number[] = [];
    try {
      await Promise.all([on.ready(), off.ready(), control.ready()]);
      const variant = (name: string, mesh: typeof on): Variant => ({
        name,
        send: async () => {
          const res = await mesh.fetch('http://bench/items/42');
          await res.arrayBuffer();
        },
      });
      for (const concurrency of quick ? [10] : [1, 10, 50]) {
        const stats = await runInterleaved(
          [variant('off', off), variant('on', on), variant('control', control)],
          quick
            ? { concurrency, rounds: 4, roundMs: 200, warmupMs: 150 }
            : { concurrency, rounds: 10, roundMs: 1000, warmupMs: 500 },
        );
        const a = stats.on as VariantStats;
        const b = stats.off as VariantStats;
        cpuOff.push(b.cpuUsPerRequest);
        const ratio = pairedRatio(a, b);
        const aa = pairedRatio(stats.control as VariantStats, b);
        results[`fetch.c${concurrency}`] = {
          throughputRatio: round3(ratio),
          controlRatio: round3(aa),
          addedP50Us: round2(a.p50Us - b.p50Us),
          cpuPerRequestRatio: round3(a.cpuUsPerRequest / b.cpuUsPerRequest),
        };
        summary.push(
          `telemetry on/off fetch c=${concurrency}: ${round3(ratio)}x throughput (target >= 0.97), ` +
            `p50 +${round2(a.p50Us - b.p50Us)}us; A/A control ${round3(aa)}x (noise floor)`,
        );
      }
      // The same cost measured directly (robust on a loaded machine): what telemetry adds to one
      // request — the tracing hook on the no-op path, recording one logical request and one
      // attempt into the metrics — against the CPU one mesh request costs without telemetry.
      const rt = on.service('bench');
      const ep = rt?.endpoints[0];
      const hook = getTelemetry(on)?.requestHook;
      if (rt && ep && hook) {
        const n = quick ? 200_000 : 1_000_000;
        const info = {
          service: rt,
          transport: 'http' as const,
          method: 'GET',
          path: '/items/42',
          authority: 'bench',
          header: () => undefined,
        };
        const event = {
          service: 'bench',
          method: 'GET',
          path: '/items/42',
          durationMs: 1.5,
          outcome: 'success' as const,
          status: 200,
          attempts: 1,
          endpoint: ep,
          error: undefined,
          transport: 'http' as const,
        };
        const attempt = { ...event, attempt: 0, retryReason: undefined, verdict: 'success' as const };
        const time = (fn: () => void): number => {
          for (let i = 0; i < n / 10; i++) fn();
          const t0 = performance.now();
          for (let i = 0; i < n; i++) fn();
          return ((performance.now() - t0) * 1e6) / n;
        };
        // Telemetry records calls and attempts through core's call listener (no event objects):
        // what the pipeline hands it per request, `RuntimeHooks.callEnded` / `attemptEnded`.
        const hooks = on.hooks;
        const recordRequest = () => hooks.callEnded(info, 1.5, 'success', 200, 1, ep, undefined);
        const recordAttempt = () =>
          hooks.attemptEnded(rt, ep, 0, 1.5, 'success', 200, undefined, undefined, 'http', 'success');
        const hookNs = time(() => hook.start(info));
        const requestNs = time(recordRequest);
        const attemptNs = time(recordAttempt);
        // The admin page's recorder on top (latency windows per service and endpoint, rates):
        // the same events on a mesh with `admin` on, side by side with the one without.
        const withAdmin = await createMesh({ services: { bench: { endpoints } }, admin: { port: 0 } });
        try {
          await withAdmin.ready();
          const aep = withAdmin.service('bench')?.endpoints[0];
          if (aep === undefined) throw new Error('no endpoint');
          // The admin recorder listens to the `request` and `attempt` events: with it on, the
          // pipeline builds them beside telemetry's listener.
          const art = withAdmin.service('bench');
          if (art === undefined) throw new Error('no service');
          const aInfo = { ...info, service: art };
          const aEvent = { ...event, endpoint: aep };
          const aAttempt = { ...attempt, endpoint: aep };
          const aHooks = withAdmin.hooks;
          const adminRequestNs = time(() => {
            aHooks.callEnded(aInfo, 1.5, 'success', 200, 1, aep, undefined);
            withAdmin.events.emit('request', aEvent);
          });
          const adminAttemptNs = time(() => {
            aHooks.attemptEnded(art, aep, 0, 1.5, 'success', 200, undefined, undefined, 'http', 'success');
            withAdmin.events.emit('attempt', aAttempt);
          });
          const againRequestNs = time(recordRequest);
          const againAttemptNs = time(recordAttempt);
          const addedNs = adminRequestNs + adminAttemptNs - (againRequestNs + againAttemptNs);
          results.adminRecorder = {
            requestWithAdminNs: round2(adminRequestNs),
            attemptWithAdminNs: round2(adminAttemptNs),
            requestWithoutNs: round2(againRequestNs),
            attemptWithoutNs: round2(againAttemptNs),
            addedPerRequestNs: round2(addedNs),
          };
          summary.push(
            `admin recorder per request (1 request + 1 attempt event): +${round2(addedNs)}ns ` +
              `(request ${round2(againRequestNs)} -> ${round2(adminRequestNs)}ns, attempt ${round2(againAttemptNs)} -> ${round2(adminAttemptNs)}ns)`,
          );
        } finally {
          await withAdmin.close();
        }
        const offCpuUs = median(cpuOff);
        const addedUs = (hookNs + requestNs + attemptNs) / 1000;
        const estimated = offCpuUs / (offCpuUs + addedUs);
        results.perRequest = {
          tracingHookNoopNs: round2(hookNs),
          recordRequestNs: round2(requestNs),
          recordAttemptNs: round2(attemptNs),
          meshRequestCpuUs: round2(offCpuUs),
          estimatedThroughputRatio: round3(estimated),
        };
        summary.push(
          `telemetry per request: hook ${round2(hookNs)}ns + request ${round2(requestNs)}ns + attempt ${round2(attemptNs)}ns ` +
            `vs ${round2(offCpuUs)}us CPU per mesh request => ${round3(estimated)}x (target >= 0.97)`,
        );
      }
    } finally {
      await on.close();
      await off.close();
      await control.close();
      await server.close();
    }

    // Scrape of 100 services x 10 endpoints.
    const services: Record<string, { endpoints: string[] }> = {};
    for (let s = 0; s < 100; s++) {
      services[`svc-${s}`] = {
        endpoints: Array.from({ length: 10 }, (_, e) => `10.${Math.floor(s / 250)}.${s % 250}.${e + 1}:8080`),
      };
    }
    const big = await createMesh({ services });
    try {
      await big.ready();
      const tel = getTelemetry(big);
      if (!tel) throw new Error('telemetry not installed');
      // Every service has request and attempt series for a few status/outcome combinations, and
      // every series changes before every scrape (the worst case: nothing rendered can be reused).
      const touch = () => {
        for (const rt of big.services()) {
          const ep = rt.endpoints[0];
          for (const [status, outcome] of [
            [200, 'success'],
            [404, 'success'],
            [503, 'http_error'],
          ] as const) {
            if (ep) rt.endAttempt(ep, rt.startAttempt(ep), 0, outcome, status, undefined, undefined, 'http');
            big.hooks.callEnded(
              {
                service: rt,
                transport: 'http',
                method: 'GET',
                path: '/',
                authority: rt.name,
                header: () => undefined,
              },
              12,
              outcome,
              status,
              1,
              ep,
              undefined,
            );
          }
        }
      };
      // Wall time, and the process CPU time of the scrape (the shared bench machine is often
      // oversubscribed: CPU time is what the scrape itself costs).
      const times: number[] = [];
      const cpu: number[] = [];
      let bytes = 0;
      for (let i = 0; i < (quick ? 5 : 30); i++) {
        touch();
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        const { body } = await tel.scrape();
        times.push(performance.now() - t0);
        const c = process.cpuUsage(c0);
        cpu.push((c.user + c.system) / 1000);
        bytes = body.length;
      }
      const p50 = median(times);
      const cpu50 = median(cpu);
      results.scrape = {
        services: 100,
        endpointsPerService: 10,
        medianMs: round2(p50),
        minMs: round2(Math.min(...times)),
        medianCpuMs: round2(cpu50),
        bytes,
      };
      summary.push(
        `telemetry scrape 100 services x 10 endpoints: ${round2(p50)} ms median wall, ${round2(cpu50)} ms CPU ` +
          `(target <= 20), ${bytes} bytes`,
      );
    } finally {
      await big.close();
    }
    return { results, summary };
  },
};

export default suite;

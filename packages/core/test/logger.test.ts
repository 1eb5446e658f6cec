import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { nextEvent } from '../../../test/helpers/events.js';
import { attachLogger, consoleLogger, type LogLevel, Mesh, MeshEvents, parseConfig } from '../src/index.js';

/** A real pino logger writing to memory; `lines()` parses what it wrote. */
function memoryPino() {
  const chunks: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => chunks.push(s) });
  return {
    logger,
    raw: () => chunks.join(''),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

/** A console that records `[level, text]`. */
function memoryConsole() {
  const lines: Array<[LogLevel, string]> = [];
  const at = (level: LogLevel) => (text: string) => lines.push([level, text]);
  return { lines, console: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } };
}

describe('mesh logger', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    vi.useRealTimers();
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('writes discovery failures and recoveries, breaker, ejection, panic, health and extension messages to pino at their level', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-logger-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'reviews.yaml');
    writeFileSync(file, '- 127.0.0.1:99999\n');
    const out = memoryPino();
    const mesh = new Mesh(
      parseConfig({ services: { reviews: { file: { path: file, pollInterval: '50ms' } } } }),
      {
        logger: out.logger,
      },
    );
    cleanups.push(() => mesh.close());

    // A bad endpoint file: discovery fails, the line says so at warn with the service and the error.
    await mesh.ready();
    const failure = out.lines().find((l) => l.scope === 'discovery');
    expect(failure).toMatchObject({
      level: 40, // pino's warn
      scope: 'discovery',
      service: 'reviews',
      source: 'file',
      err: { type: 'MeshError', code: 'MESHLET_ERR_DISCOVERY' },
    });
    expect(String(failure?.msg)).toMatch(/invalid endpoints file .*reviews\.yaml/);
    // The file is fixed: one info line says discovery recovered.
    const recovered = nextEvent(mesh.events, 'endpoints');
    writeFileSync(file, '- 127.0.0.1:9001\n');
    await recovered;
    expect(out.lines().find((l) => l.msg === 'discovery of reviews recovered: 1 endpoint')).toMatchObject({
      level: 30,
      service: 'reviews',
      endpoints: 1,
    });

    mesh.events.emit('breaker', { service: 'reviews', state: 'open' });
    mesh.events.emit('breaker', { service: 'reviews', state: 'closed' });
    mesh.events.emit('ejection', {
      service: 'reviews',
      endpoint: '127.0.0.1:9001',
      ejected: true,
      reason: 'consecutive_5xx',
      durationMs: 30_000,
    });
    mesh.events.emit('panic', { service: 'reviews', panic: true, usable: 1, total: 4 });
    mesh.events.emit('health', {
      service: 'reviews',
      endpoint: '127.0.0.1:9001',
      healthy: false,
      reason: 'timeout',
    });
    mesh.events.emit('log', {
      level: 'warn',
      scope: 'xds',
      message: 'xDS NACK of RouteConfiguration version 2: invalid regex',
      data: { typeUrl: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration', version: '2' },
    });
    const by = (msg: RegExp) => out.lines().find((l) => msg.test(String(l.msg)));
    expect(by(/circuit breaker of reviews opened/)).toMatchObject({
      level: 40,
      scope: 'breaker',
      state: 'open',
    });
    expect(by(/circuit breaker of reviews closed/)).toMatchObject({ level: 30, state: 'closed' });
    expect(by(/ejected 127\.0\.0\.1:9001 from reviews for 30s \(consecutive_5xx\)/)).toMatchObject({
      level: 40,
      scope: 'outlier',
      endpoint: '127.0.0.1:9001',
      reason: 'consecutive_5xx',
      durationMs: 30_000,
    });
    expect(by(/reviews is in panic mode: 1 of 4/)).toMatchObject({
      level: 40,
      scope: 'panic',
      usable: 1,
      total: 4,
    });
    expect(by(/127\.0\.0\.1:9001 of reviews is unhealthy \(timeout\)/)).toMatchObject({
      level: 40,
      healthy: false,
    });
    expect(by(/xDS NACK/)).toMatchObject({ level: 40, scope: 'xds', version: '2' });
    // Valid pino lines: one time, one level, one msg each.
    for (const line of out.raw().trim().split('\n')) expect(line.match(/"time":/g)).toHaveLength(1);
  });

  it('rate limits each kind (event and service) with a summary of what it suppressed (fake clock)', async () => {
    vi.useFakeTimers();
    const { lines, console } = memoryConsole();
    const events = new MeshEvents();
    const detach = attachLogger(events, consoleLogger({ console }), { lines: 3, intervalMs: 10_000 });
    cleanups.push(detach);
    const eject = (service: string, i: number) =>
      events.emit('ejection', {
        service,
        endpoint: `10.0.0.${i}:80`,
        ejected: true,
        reason: 'consecutive_5xx',
        durationMs: 30_000,
      });
    for (let i = 0; i < 8; i++) eject('a', i);
    eject('b', 1);
    expect(lines.filter(([, t]) => t.includes('from a '))).toHaveLength(3);
    expect(lines.filter(([, t]) => t.includes('from b '))).toHaveLength(1);
    expect(lines.some(([, t]) => t.includes('suppressed'))).toBe(false);
    await vi.advanceTimersByTimeAsync(9_999);
    expect(lines.some(([, t]) => t.includes('suppressed'))).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(lines.filter(([, t]) => t.includes('suppressed'))).toEqual([
      [
        'warn',
        'meshlet warn: suppressed 5 more "ejection:a" messages in 10s (scope=meshlet kind=ejection:a suppressed=5)',
      ],
    ]);
    // A new window: lines flow again.
    eject('a', 9);
    expect(lines.at(-1)?.[1]).toContain('ejected 10.0.0.9:80 from a for 30s');
    // Detaching writes the pending summary at once.
    for (let i = 0; i < 4; i++) eject('a', 20 + i);
    detach();
    expect(lines.at(-1)).toEqual([
      'warn',
      'meshlet warn: suppressed 2 more "ejection:a" messages in 10s (scope=meshlet kind=ejection:a suppressed=2)',
    ]);
  });

  it('prints one readable console line per message, drops debug by default, and survives a throwing logger', () => {
    const { lines, console } = memoryConsole();
    const events = new MeshEvents();
    cleanups.push(attachLogger(events, consoleLogger({ console })));
    events.emit('discoveryError', {
      service: 'ratings',
      source: 'dns',
      error: Object.assign(new Error('DNS A lookup of "ratings.test" failed: ENOTFOUND'), {
        code: 'MESHLET_ERR_DISCOVERY',
      }),
    });
    events.emit('log', { level: 'debug', scope: 'xds', message: 'ack' });
    expect(lines).toEqual([
      [
        'warn',
        'meshlet warn: DNS A lookup of "ratings.test" failed: ENOTFOUND (scope=discovery service=ratings source=dns err=MESHLET_ERR_DISCOVERY)',
      ],
    ]);
    const throwing = new MeshEvents();
    const boom = () => {
      throw new Error('logger down');
    };
    cleanups.push(attachLogger(throwing, { debug: boom, info: boom, warn: boom, error: boom }));
    expect(() => throwing.emit('breaker', { service: 'x', state: 'open' })).not.toThrow();
  });

  it('logs to the console by default, and nothing with logger: false', async () => {
    const spy = vi.spyOn(globalThis.console, 'warn').mockImplementation(() => {});
    const quiet = new Mesh(parseConfig({ services: { r: ['127.0.0.1:1'] } }), { logger: false });
    quiet.events.emit('breaker', { service: 'r', state: 'open' });
    await quiet.close();
    expect(spy).not.toHaveBeenCalled();
    const loud = new Mesh(parseConfig({ services: { r: ['127.0.0.1:1'] } }));
    loud.events.emit('breaker', { service: 'r', state: 'open' });
    await loud.close();
    expect(spy).toHaveBeenCalledWith(expect.stringMatching(/^meshlet warn: circuit breaker of r opened/));
  });
});

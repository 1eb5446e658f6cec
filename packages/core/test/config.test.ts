import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  checkConfig,
  ErrorCodes,
  isConfigError,
  isMeshError,
  loadConfig,
  MeshConfigError,
  parseConfig,
} from '../src/index.js';

function issuesOf(raw: unknown): string[] {
  return checkConfig(raw).issues.map((i) => `${i.path}: ${i.message}`);
}

describe('config', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('accepts the design example and fills defaults', () => {
    const config = parseConfig({
      services: { reviews: { endpoints: ['127.0.0.1:9001', '127.0.0.1:9002'], lb: 'round_robin' } },
    });
    const svc = config.services.reviews;
    expect(svc?.discovery.type).toBe('static');
    expect(svc?.lb.policy).toBe('round_robin');
    // Istio's defaults: no route timeout; 2 retries on connect-failure, refused-stream,
    // unavailable, cancelled and 503 — not on resets.
    expect(svc?.timeoutMs).toBe(0);
    expect(svc?.retry.maxRetries).toBe(2);
    expect([...(svc?.retry.on ?? [])].sort()).toEqual([
      'cancelled',
      'connect-failure',
      'refused-stream',
      'retriable-status-codes',
      'unavailable',
    ]);
    expect(svc?.retry.bufferLimitBytes).toBe(65_536);
    expect(svc?.retry.statusCodes).toEqual([503]);
    expect(config.passthrough).toBe(true);
  });

  it('accepts a bare endpoint list and object endpoints with locality', () => {
    const config = parseConfig({
      services: {
        a: ['10.0.0.1:80'],
        b: {
          endpoints: [
            { address: '::1', port: 8080, weight: 3, zone: 'z1', priority: 1, metadata: { pod: 'b-1' } },
          ],
        },
      },
    });
    const b = config.services.b;
    if (!b) throw new Error('service b missing');
    const ep = (
      b.discovery.config as { endpoints: { id: string; weight: number; locality: { zone: string } }[] }
    ).endpoints[0];
    expect(ep?.id).toBe('[::1]:8080');
    expect(ep?.weight).toBe(3);
    expect(ep?.locality.zone).toBe('z1');
  });

  it('names every bad field by its path', () => {
    const issues = issuesOf({
      services: {
        reviews: { endpoints: ['127.0.0.1', 'x:99999', 42], lb: 'nope', timeout: 'soon', endpionts: [] },
        ratings: {
          lb: { policy: 'least_request', choiceCount: 1 },
          endpoints: ['127.0.0.1:1'],
          retry: { on: ['bogus', 503] },
        },
        empty: {},
      },
      defaults: { panicThreshold: 120 },
      bogus: true,
    });
    const text = issues.join('\n');
    expect(text).toContain('services.reviews.endpoints[0]: "127.0.0.1" has no port');
    expect(text).toContain('services.reviews.endpoints[1]: "x:99999" has an invalid port');
    expect(text).toContain('services.reviews.endpoints[2]: must be "host:port"');
    expect(text).toContain('services.reviews.lb: unknown load-balancing policy "nope"');
    expect(text).toContain('services.reviews.timeout: must be a duration');
    expect(text).toContain('services.reviews.endpionts: unknown field');
    expect(text).toContain('services.ratings.lb.choiceCount: must be >= 2');
    expect(text).toContain('services.ratings.retry.on[0]: must be an HTTP status code or one of');
    expect(text).toContain('services.empty: has no endpoints');
    expect(text).toContain('defaults.panicThreshold: must be <= 100');
    expect(text).toContain('bogus: unknown field');
  });

  it('throws a coded MeshConfigError that survives the isMeshError guard', () => {
    let caught: unknown;
    try {
      parseConfig({ services: { x: { endpoints: 'nope' } } });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(MeshConfigError);
    expect(isMeshError(caught)).toBe(true);
    expect(isConfigError(caught)).toBe(true);
    expect((caught as MeshConfigError).code).toBe(ErrorCodes.CONFIG);
    expect((caught as MeshConfigError).issues[0]?.path).toBe('services.x.endpoints');
  });

  it('rejects two discovery kinds for one service', () => {
    expect(issuesOf({ services: { x: { endpoints: ['a:1'], dns: 'b:2' } } }).join()).toContain(
      'more than one discovery',
    );
  });

  it('parses retry options and defaults inheritance', () => {
    const config = parseConfig({
      defaults: {
        timeout: '2s',
        retry: { attempts: 3, on: 'connect-failure,5xx', backoff: { base: '10ms', max: '1s' } },
      },
      services: { a: { endpoints: ['h:1'] }, b: { endpoints: ['h:2'], retry: false, timeout: 0 } },
    });
    expect(config.services.a?.timeoutMs).toBe(2000);
    expect(config.services.a?.retry.maxRetries).toBe(3);
    expect(config.services.a?.retry.backoffMaxMs).toBe(1000);
    expect(config.services.b?.retry.maxRetries).toBe(0);
    expect(config.services.b?.timeoutMs).toBe(0);
  });

  it('loads YAML and JSON files, resolving relative paths against the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-config-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'mesh.yaml'), 'services:\n  reviews:\n    file: ./reviews.yaml\n');
    const config = loadConfig(join(dir, 'mesh.yaml'));
    const reviews = config.services.reviews;
    if (!reviews) throw new Error('service reviews missing');
    expect((reviews.discovery.config as { path: string }).path).toBe(join(dir, 'reviews.yaml'));
    writeFileSync(join(dir, 'mesh.json'), JSON.stringify({ services: { r: { endpoints: ['h:1'] } } }));
    expect(Object.keys(loadConfig(join(dir, 'mesh.json')).services)).toEqual(['r']);
  });

  it('reports YAML syntax errors with file, line and column', () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-config-'));
    dirs.push(dir);
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'services:\n  reviews: [unclosed\n');
    expect(() => loadConfig(file)).toThrowError(/bad\.yaml[\s\S]*line \d+, column \d+/);
    expect(() => loadConfig(join(dir, 'missing.yaml'))).toThrowError(/cannot read/);
  });
});

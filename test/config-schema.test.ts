import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  checkConfig,
  type JsonSchema,
  loadBalancers,
  meshConfigJsonSchema,
  parseConfigText,
  registerLoadBalancer,
  registerMeshSection,
  s,
} from '@meshlet/core';
import { Ajv } from 'ajv';
import { beforeAll, describe, expect, it } from 'vitest';
import 'meshlet';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Every property of every object in a JSON Schema, with its path in the schema. */
function properties(
  schema: unknown,
  at = '#',
): Array<{ at: string; name: string; prop: JsonSchema; required: boolean }> {
  const out: Array<{ at: string; name: string; prop: JsonSchema; required: boolean }> = [];
  const walk = (node: unknown, path: string) => {
    if (Array.isArray(node)) {
      node.forEach((n, i) => {
        walk(n, `${path}/${i}`);
      });
      return;
    }
    if (typeof node !== 'object' || node === null) return;
    const o = node as JsonSchema;
    if (o.properties && typeof o.properties === 'object') {
      const required = (o.required as string[] | undefined) ?? [];
      for (const [name, prop] of Object.entries(o.properties as Record<string, JsonSchema>)) {
        out.push({ at: path, name, prop, required: required.includes(name) });
      }
    }
    for (const [k, v] of Object.entries(o)) walk(v, `${path}/${k}`);
  };
  walk(schema, at);
  return out;
}

describe('config schema', () => {
  it('documents every option with its default (or says it is required)', () => {
    const published = JSON.parse(readFileSync(join(root, 'packages/meshlet/schema.json'), 'utf8'));
    const props = properties(published);
    expect(props.length).toBeGreaterThan(200);
    const undocumented = props
      .filter(({ prop }) => prop.const === undefined) // the tag of a tagged entry (`policy`, `type`)
      .filter(({ prop, required }) => {
        const d = typeof prop.description === 'string' ? prop.description : '';
        return d.length === 0 || (!required && !d.includes('Default: '));
      })
      .map(({ at, name }) => `${at}/properties/${name}`);
    expect(undocumented).toEqual([]);
  });

  describe('validates as the runtime does (Ajv, draft-07)', () => {
    const ajv = new Ajv({ allErrors: true, strict: false });
    const validate = ajv.compile(meshConfigJsonSchema());
    const yaml = (file: string) => parseConfigText(readFileSync(join(root, file), 'utf8'), file);

    it('accepts the example configs the runtime accepts', () => {
      const quickstart = yaml('examples/quickstart/mesh.yaml');
      const configMap = yaml('examples/kubernetes/02-config.yaml') as { data: { 'mesh.yaml': string } };
      const inCluster = parseConfigText(configMap.data['mesh.yaml'], 'mesh.yaml');
      for (const config of [quickstart, inCluster]) {
        expect(checkConfig(config).issues).toEqual([]);
        expect(validate(config), JSON.stringify(validate.errors)).toBe(true);
      }
    });

    it.each([
      ['a misspelt key', { servicez: {} }, 'servicez: unknown field'],
      [
        'an unknown policy',
        { services: { r: { endpoints: ['a:1'], lb: 'fastest' } } },
        'unknown load-balancing',
      ],
      ['a bad duration', { defaults: { timeout: '2 seconds' } }, 'defaults.timeout: must be a duration'],
      [
        'an option of another policy',
        { defaults: { lb: { policy: 'round_robin', choiceCount: 2 } } },
        'choiceCount',
      ],
      ['a misspelt tls key', { tls: { dirr: '/certs' } }, 'tls.dirr: unknown field'],
      [
        'an unknown DNS resolver',
        { services: { r: { dns: { name: 'r:80', resolver: 'bind' } } } },
        'dns.resolver',
      ],
    ])('rejects %s, as the runtime does', (_what, config, message) => {
      expect(validate(config)).toBe(false);
      expect(
        checkConfig(config)
          .issues.map((i) => `${i.path}: ${i.message}`)
          .join('\n'),
      ).toContain(message);
    });
  });

  describe('a third party adds itself through the registries', () => {
    beforeAll(() => {
      if (loadBalancers.get('least_latency')) return;
      registerLoadBalancer({
        name: 'least_latency',
        schema: s.object(
          { window: s.duration({ default: '10s', doc: 'Latency window.' }) },
          { name: 'LeastLatencyOptions', doc: 'A third-party policy.' },
        ),
        parseConfig(raw, path, issues) {
          return this.schema?.parse(raw, path, issues);
        },
        create: () => ({ update: () => ({ pick: () => ({ kind: 'queue' }) }) }),
      });
      registerMeshSection({
        name: 'audit',
        schema: s.object(
          {
            sink: s.enum(['stdout', 'syslog'] as const, { default: 'stdout', doc: 'Where audit lines go.' }),
          },
          { name: 'AuditInput', doc: 'A third-party section.', defaultText: 'off' },
        ),
        parse: (raw, path, issues) =>
          s.object({ sink: s.enum(['stdout', 'syslog'] as const) }).parse(raw, path, issues),
      });
    });

    it('appears in the JSON Schema and is validated with field paths', () => {
      const schema = meshConfigJsonSchema();
      const text = JSON.stringify(schema);
      expect(text).toContain('"const":"least_latency"');
      expect((schema.properties as Record<string, unknown>).audit).toBeDefined();
      const validate = new Ajv({ strict: false }).compile(schema);
      expect(
        validate({ audit: { sink: 'syslog' }, defaults: { lb: { policy: 'least_latency', window: '5s' } } }),
      ).toBe(true);
      expect(validate({ audit: { sinc: 'syslog' } })).toBe(false);
      expect(
        checkConfig({
          audit: { sink: 'tape' },
          defaults: { lb: { policy: 'least_latency', window: 'soon' } },
        }).issues.map((i) => `${i.path}: ${i.message}`),
      ).toEqual([
        'defaults.lb.window: must be a duration such as 250ms, 2s, 1m or a number of milliseconds, got "soon"',
        'audit.sink: must be one of stdout, syslog, got the string "tape"',
      ]);
    });
  });
});

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

export const FIXTURES = join(import.meta.dirname, 'fixtures');

export interface FixtureResource {
  readonly file: string;
  readonly type: string;
  readonly json: Record<string, unknown>;
}

const WANTED = new Set([
  'envoy.config.listener.v3.Listener',
  'envoy.config.route.v3.RouteConfiguration',
  'envoy.config.cluster.v3.Cluster',
  'envoy.config.endpoint.v3.ClusterLoadAssignment',
]);

/** Every xDS resource with an `@type` anywhere inside a JSON dump (config_dump or CSDS). */
function collect(file: string, v: unknown, out: FixtureResource[]): void {
  if (Array.isArray(v)) {
    for (const x of v) collect(file, x, out);
    return;
  }
  if (typeof v !== 'object' || v === null) return;
  const o = v as Record<string, unknown>;
  const t = typeof o['@type'] === 'string' ? (o['@type'] as string).replace(/^.*\//, '') : undefined;
  if (t && WANTED.has(t)) {
    const { '@type': _t, ...rest } = o;
    out.push({ file, type: t, json: rest });
    return;
  }
  for (const x of Object.values(o)) collect(file, x, out);
}

export function jsonFixtureResources(name: string): FixtureResource[] {
  const out: FixtureResource[] = [];
  collect(name, JSON.parse(readFileSync(join(FIXTURES, name), 'utf8')), out);
  return out;
}

/** The Envoy Gateway bundle: each YAML document is a list of resources of the type named above it. */
export function gatewayFixtureResources(): FixtureResource[] {
  const name = 'envoy-gateway-xds-translator-golden-bundle.yaml';
  const text = readFileSync(join(FIXTURES, name), 'utf8');
  const out: FixtureResource[] = [];
  for (const doc of parseAllDocuments(text)) {
    const contents = doc.contents as { commentBefore?: string | null } | null;
    const comment = `${doc.commentBefore ?? ''}\n${contents?.commentBefore ?? ''}`;
    const m = /type: (\S+)/.exec(comment);
    const file = /file: (\S+)/.exec(comment)?.[1] ?? name;
    if (!m) continue;
    for (const r of (doc.toJS() as Array<Record<string, unknown>>) ?? [])
      out.push({ file, type: m[1] as string, json: r });
  }
  return out;
}

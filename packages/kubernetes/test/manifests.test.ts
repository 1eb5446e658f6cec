import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfigText } from '@meshlet/core';
import { Deployment } from 'kubernetes-models/apps/v1';
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1';
import { Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { ConfigMap, Namespace, Service, ServiceAccount } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { parseKubernetesSettings } from '../src/config.js';

const dir = fileURLToPath(new URL('../../../examples/kubernetes/', import.meta.url));

/** The Kubernetes models (each validates against the Kubernetes OpenAPI JSON schema). */
const MODELS: Record<string, new (data: Record<string, unknown>) => { validate(): void }> = {
  'v1/Namespace': Namespace as never,
  'v1/ServiceAccount': ServiceAccount as never,
  'v1/ConfigMap': ConfigMap as never,
  'v1/Service': Service as never,
  'apps/v1/Deployment': Deployment as never,
  'networking.k8s.io/v1/Ingress': Ingress as never,
  'rbac.authorization.k8s.io/v1/Role': Role as never,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding as never,
};

type Obj = Record<string, unknown> & {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
};

function load(): Array<{ file: string; obj: Obj }> {
  const out: Array<{ file: string; obj: Obj }> = [];
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, file), 'utf8'))) {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]?.message}`);
      const obj = doc.toJS() as Obj | null;
      if (obj) out.push({ file, obj });
    }
  }
  return out;
}

function validate(obj: Obj): void {
  const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
  if (!Model) throw new Error(`no schema for ${obj.apiVersion}/${obj.kind}`);
  new Model(obj).validate();
}

const all = load();
const find = (kind: string) => all.find((m) => m.obj.kind === kind)?.obj as Obj;

describe('examples/kubernetes manifests', () => {
  it('holds every object the walkthrough applies', () => {
    expect(all.map((m) => m.obj.kind).sort()).toEqual(
      [
        'ConfigMap',
        'Deployment',
        'Ingress',
        'Namespace',
        'Role',
        'RoleBinding',
        'Service',
        'ServiceAccount',
      ].sort(),
    );
  });

  for (const { file, obj } of all) {
    it(`${file}: ${obj.kind} ${obj.metadata.name} is valid against the Kubernetes schema`, () => {
      expect(() => validate(obj)).not.toThrow();
      if (obj.kind !== 'Namespace') expect(obj.metadata.namespace).toBe('shop');
    });
  }

  it('the schema check is real: broken objects are rejected', () => {
    const dep = structuredClone(find('Deployment')) as Obj & {
      spec: { template: { spec: { containers: Array<Record<string, unknown>> } } };
    };
    (dep.spec.template.spec.containers[0] as { ports: Array<Record<string, unknown>> }).ports[0] = {
      containerPort: 'http',
    };
    expect(() => validate(dep)).toThrow(/containerPort/);
    const svc = structuredClone(find('Service')) as Obj & { spec: Record<string, unknown> };
    svc.spec.ports = 'http';
    expect(() => validate(svc)).toThrow();
    const role = structuredClone(find('Role')) as Obj & { rules: Array<Record<string, unknown>> };
    delete role.rules[0]?.verbs;
    expect(() => validate(role)).toThrow(/verbs/);
  });

  it('grants get/list/watch on services and endpointslices to the deployment service account', () => {
    const role = find('Role') as unknown as {
      rules: Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }>;
    };
    const allows = (group: string, resource: string) =>
      role.rules.some(
        (r) =>
          r.apiGroups.includes(group) &&
          r.resources.includes(resource) &&
          ['get', 'list', 'watch'].every((v) => r.verbs.includes(v)),
      );
    expect(allows('', 'services')).toBe(true);
    expect(allows('discovery.k8s.io', 'endpointslices')).toBe(true);
    const binding = find('RoleBinding') as unknown as {
      subjects: Array<{ name: string }>;
      roleRef: { name: string };
    };
    const dep = find('Deployment') as unknown as { spec: { template: { spec: Record<string, unknown> } } };
    expect(binding.roleRef.name).toBe(find('Role').metadata.name);
    expect(binding.subjects[0]?.name).toBe(find('ServiceAccount').metadata.name);
    expect(dep.spec.template.spec.serviceAccountName).toBe(find('ServiceAccount').metadata.name);
  });

  it('probes the admin health endpoints, mounts the mTLS secret, and the Service and Ingress select the pods', () => {
    const dep = find('Deployment') as unknown as {
      spec: {
        selector: { matchLabels: Record<string, string> };
        template: {
          metadata: { labels: Record<string, string> };
          spec: {
            containers: Array<{
              ports: Array<{ name: string; containerPort: number }>;
              livenessProbe: { httpGet: { path: string; port: string } };
              readinessProbe: { httpGet: { path: string; port: string } };
              volumeMounts: Array<{ name: string; mountPath: string }>;
            }>;
            volumes: Array<{
              name: string;
              secret?: { secretName: string; items: Array<{ key: string; path: string }> };
              configMap?: { name: string };
            }>;
          };
        };
      };
    };
    const c = dep.spec.template.spec.containers[0];
    const admin = c?.ports.find((p) => p.name === 'admin');
    expect(c?.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'admin' });
    expect(c?.readinessProbe.httpGet).toEqual({ path: '/ready', port: 'admin' });
    const secret = dep.spec.template.spec.volumes.find((v) => v.secret?.secretName === 'reviews-mtls');
    expect(secret?.secret?.items.map((i) => i.key).sort()).toEqual(['ca.crt', 'tls.crt', 'tls.key']);
    const tlsMount = c?.volumeMounts.find((m) => m.name === secret?.name);
    // The mesh config (in the ConfigMap) points at the mounted directory and the admin port.
    const cm = find('ConfigMap') as unknown as { data: Record<string, string> };
    const mesh = parseConfigText(cm.data['mesh.yaml'] ?? '', 'mesh.yaml') as {
      tls: { dir: string };
      admin: { port: number; host: string; token?: { file: string } };
      kubernetes: unknown;
    };
    expect(mesh.tls.dir).toBe(tlsMount?.mountPath);
    expect(mesh.admin.port).toBe(admin?.containerPort);
    // Bound to the pod IP (the kubelet and Prometheus connect there): then a token protects it.
    expect(mesh.admin.host).toBe('0.0.0.0');
    const tokenVolume = dep.spec.template.spec.volumes.find(
      (v) => v.secret?.secretName === 'reviews-admin-token',
    );
    const tokenMount = c?.volumeMounts.find((m) => m.name === tokenVolume?.name);
    expect(mesh.admin.token?.file).toBe(`${tokenMount?.mountPath}/${tokenVolume?.secret?.items[0]?.path}`);
    const issues: Array<{ path: string; message: string }> = [];
    parseKubernetesSettings(mesh.kubernetes, 'kubernetes', issues);
    expect(issues).toEqual([]);
    const cmVolume = dep.spec.template.spec.volumes.find((v) => v.configMap);
    expect(cmVolume?.configMap?.name).toBe(find('ConfigMap').metadata.name);

    const svc = find('Service') as unknown as {
      spec: { selector: Record<string, string>; ports: Array<{ name: string; targetPort: string }> };
    };
    for (const [k, v] of Object.entries(svc.spec.selector))
      expect(dep.spec.template.metadata.labels[k]).toBe(v);
    for (const [k, v] of Object.entries(dep.spec.selector.matchLabels))
      expect(dep.spec.template.metadata.labels[k]).toBe(v);
    const target = svc.spec.ports[0]?.targetPort;
    expect(c?.ports.some((p) => p.name === target)).toBe(true);
    const ing = find('Ingress') as unknown as {
      spec: {
        rules: Array<{
          http: { paths: Array<{ backend: { service: { name: string; port: { name: string } } } }> };
        }>;
      };
    };
    const backend = ing.spec.rules[0]?.http.paths[0]?.backend.service;
    expect(backend?.name).toBe(find('Service').metadata.name);
    expect(svc.spec.ports.some((p) => p.name === backend?.port.name)).toBe(true);
  });
});

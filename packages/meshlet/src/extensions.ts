/**
 * The extensions `createMesh()` runs, one per package that plugs into the mesh. Each package
 * registers its own block here; imported for its side effect from `index.ts`.
 *
 * gRPC and xDS are imported when a mesh needs them, not on `import 'meshlet'`: an HTTP-only
 * application loads neither grpc-js nor protobufjs (`@grpc/grpc-js` is an optional peer).
 */

import { type Mesh as CoreMesh, MeshError, type UpstreamTls } from '@meshlet/core';
import type { CredentialsProvider } from '@meshlet/grpc';
import { type GrpcJsSupport, grpcJsSupport, registerUnsupportedMeshResolver } from '@meshlet/grpc/support';
import { kubernetesWanted } from '@meshlet/kubernetes/config';
import '@meshlet/telemetry/config';
import { getMeshTls, type MeshTls, meshTlsFor } from '@meshlet/tls';
import { xdsBootstrapFor } from '@meshlet/xds/config';
import { registerExtension } from './mesh.js';

// Kubernetes EndpointSlice discovery: on with `kubernetes: {}` in the config, or in a cluster.
registerExtension({
  name: 'kubernetes',
  async setup(mesh) {
    const env = mesh.options.env ?? process.env;
    // The discovery (API client, watches) loads only when it is on.
    if (!kubernetesWanted(mesh.config, env)) return;
    const { setupKubernetes } = await import('@meshlet/kubernetes');
    await setupKubernetes(mesh, { env });
  },
});

// mTLS from mounted certificates (`tls: { dir }`, per-service `tls` overrides), from the xDS
// bootstrap's certificate-provider instances (the `default` one is the mesh's own certificate when
// there is no `tls` section), and inbound authorization (`authorization: { mode, policies }`).
// Certificates are read (and validated) before the dispatcher exists, so a bad directory or
// provider file fails createMesh with MESHLET_ERR_TLS.
registerExtension({
  name: 'tls',
  dispatcherOptions(config, options) {
    const bootstrap = xdsBootstrapFor(config, options.env ?? process.env);
    const tls = meshTlsFor(config, { certificateProviders: bootstrap?.certificateProviders });
    return tls.enabled ? { connect: tls.connect } : undefined;
  },
  setup(mesh) {
    const tls = meshTlsFor(mesh.config);
    if (tls.enabled || tls.authorizer) tls.attach(mesh);
  },
});

// gRPC: `mesh:///service` targets of the application's grpc-js resolve and balance through the
// newest open mesh (`mesh://<local.workload>/service` names this one). With mTLS on, channels get
// rotating mTLS credentials checking the service's `identity`.
function grpcCredentials(
  tls: MeshTls,
  { meshChannelCredentials, upstreamChannelCredentials }: typeof import('@meshlet/grpc'),
): CredentialsProvider {
  const cache = new Map<unknown, Map<string, ReturnType<typeof meshChannelCredentials>>>();
  // Clusters whose TLS the control plane decides: one credentials object per UpstreamTlsContext.
  const upstream = new WeakMap<UpstreamTls, ReturnType<typeof upstreamChannelCredentials>>();
  return (rt, ep) => {
    if (tls.governs(rt)) {
      const t = tls.upstreamTlsFor(rt, ep);
      if (t === undefined) return undefined; // plaintext, as the control plane says
      let creds = upstream.get(t);
      if (!creds) {
        creds = upstreamChannelCredentials({
          ...tls.upstreamSources(t, rt.name),
          sanMatchers: t.sanMatchers,
          service: rt.name,
        });
        upstream.set(t, creds);
      }
      return creds;
    }
    const source = tls.sourceFor(rt.policy);
    if (!source) return undefined;
    let byIdentity = cache.get(source);
    if (!byIdentity) {
      byIdentity = new Map();
      cache.set(source, byIdentity);
    }
    const key = rt.policy.identity ?? '';
    let creds = byIdentity.get(key);
    if (!creds) {
      creds = meshChannelCredentials(source, { identity: rt.policy.identity });
      byIdentity.set(key, creds);
    }
    return creds;
  };
}

/**
 * An installed grpc-js older than meshlet supports: the mesh still works for HTTP (the application
 * may hold grpc-js for another library), `mesh:` calls fail UNAVAILABLE naming the problem, and the
 * mesh's logger gets a warning with the code.
 */
function unsupportedGrpc(mesh: CoreMesh, support: GrpcJsSupport & { status: 'unsupported' }): void {
  registerUnsupportedMeshResolver(support);
  mesh.events.emit('log', {
    level: 'warn',
    scope: 'grpc',
    message: `${support.error.message}; mesh: gRPC targets will fail until it is upgraded`,
    data: { code: support.error.code, ...support.error.details },
  });
}

registerExtension({
  name: 'grpc',
  async setup(mesh) {
    // Only when the application can make gRPC calls at all: grpc-js is installed.
    const support = grpcJsSupport();
    if (support.status === 'missing') return;
    if (support.status === 'unsupported') {
      unsupportedGrpc(mesh, support);
      return;
    }
    const grpc = await import('@meshlet/grpc');
    const tls = getMeshTls(mesh);
    // Client spans and trace context come from the mesh's call hook (installed by telemetry).
    grpc.attachGrpc(mesh, {
      name: mesh.config.local.workload,
      credentials: tls?.enabled ? grpcCredentials(tls, grpc) : undefined,
    });
  },
});

// Metrics (prom-client), tracing (@opentelemetry/api), access logs and the admin server
// (`telemetry: {…}`, `admin: { port }`). The user's Registry / TracerProvider / access log sink
// come from `createMesh(config, { telemetry: { registry, tracerProvider, accessLogSink } })`.
registerExtension({
  name: 'telemetry',
  async setup(mesh) {
    // Client spans and trace propagation: installTelemetry sets the mesh's call hook, which every
    // transport (fetch, gRPC) reports to.
    // prom-client and @opentelemetry/api load here, with the first mesh, not on `import 'meshlet'`.
    const { installTelemetry } = await import('@meshlet/telemetry');
    const tel = await installTelemetry(mesh, mesh.options.telemetry);
    // Certificate expiry (meshlet_certificate_expiry_timestamp_seconds), now and after each rotation.
    const tls = getMeshTls(mesh);
    if (tls?.enabled) {
      const report = (s: (typeof tls.sources)[number]) => {
        const st = s.status();
        tel.setCertificateExpiry(s.dir, new Date(st.notAfter), st.spiffeId ?? '');
      };
      for (const s of tls.sources) report(s);
      mesh.onClose(tls.onRotate((e) => report(e.source)));
    }
  },
});

// xDS: a gRPC xDS bootstrap (`GRPC_XDS_BOOTSTRAP`, `GRPC_XDS_BOOTSTRAP_CONFIG`, or `xds:` in the
// config) turns it on; `http://NAME/` then resolves through the LDS listener NAME (docs/xds.md).
registerExtension({
  name: 'xds',
  async setup(mesh) {
    const env = mesh.options.env ?? process.env;
    const bootstrap = xdsBootstrapFor(mesh.config, env);
    if (bootstrap === undefined) return;
    // xDS is asked for: its client speaks gRPC, so grpc-js must be there (and supported).
    const support = grpcJsSupport();
    if (support.status !== 'supported') {
      throw new MeshError(
        support.error.code,
        `xDS is on (bootstrap: ${bootstrap.source}) but ${support.error.message}`,
        support.error.details,
      );
    }
    const { setupXds } = await import('@meshlet/xds');
    // Clusters may name the bootstrap's certificate-provider instances, and `default` when the
    // mesh's `tls` section serves as it.
    const tls = getMeshTls(mesh);
    setupXds(mesh, {
      env,
      bootstrap,
      ...(tls ? { certificateProviders: tls.providerNames } : {}),
    });
  },
});

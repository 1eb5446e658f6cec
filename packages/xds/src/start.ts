import { type Mesh, setInboundListeners } from '@meshlet/core';
import type { Bootstrap } from './bootstrap.js';
import { XdsClient } from './client.js';
import { LoadReporter } from './lrs.js';
import { DEFAULT_MAX_PROGRAM_SIZE } from './regex-size.js';
import { XdsResolver } from './resolver.js';
import { XdsInboundListeners } from './server-listeners.js';
import { DEFAULT_DRAIN_GRACE_MS, type XdsSettings, xdsBootstrapFor } from './setup.js';

export interface SetupXdsOptions {
  /** Environment searched for a bootstrap (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** The bootstrap, when the caller already read it (`xdsBootstrapFor`). */
  bootstrap?: Bootstrap;
  /**
   * The certificate-provider instances clusters may name (default: the bootstrap's); the mesh
   * adds `default` when its `tls` section serves as that instance.
   */
  certificateProviders?: readonly string[];
}

/**
 * Turns xDS on for a mesh when the config has an `xds:` section with a bootstrap, or the
 * environment has `GRPC_XDS_BOOTSTRAP` / `GRPC_XDS_BOOTSTRAP_CONFIG`. Returns the resolver (or
 * undefined when xDS stays off). Adds `snapshot().extensions.xds`.
 */
export function setupXds(mesh: Mesh, options: SetupXdsOptions = {}): XdsResolver | undefined {
  const settings = mesh.config.extensions.xds as XdsSettings | undefined;
  if (settings && !settings.enabled) return undefined;
  const bootstrap = options.bootstrap ?? xdsBootstrapFor(mesh.config, options.env);
  if (!bootstrap) return undefined;
  let resolver: XdsResolver | undefined;
  const client = new XdsClient(bootstrap, {
    resourceTimeoutMs: settings?.resourceTimeoutMs ?? 15_000,
    backoff: { baseMs: settings?.backoffBaseMs ?? 1_000, maxMs: settings?.backoffMaxMs ?? 30_000 },
    protocol: settings?.protocol ?? 'sotw',
    maxRegexProgramSize: settings?.maxRegexProgramSize ?? DEFAULT_MAX_PROGRAM_SIZE,
    ...(options.certificateProviders ? { certificateProviders: options.certificateProviders } : {}),
    onEvent: (e) => {
      // Emitted once per client: the server does not implement DeltaAggregatedResources.
      if (e.kind === 'protocolFallback')
        mesh.events.emit('log', {
          level: 'warn',
          scope: 'xds',
          message: `xDS: ${e.error}; using state-of-the-world ADS from now on`,
        });
      if (e.kind === 'disconnected') {
        resolver?.onConnectivityChange();
        mesh.events.emit('log', {
          level: 'warn',
          scope: 'xds',
          message: `xDS stream to ${e.server} failed: ${e.error}; reconnecting with backoff, keeping the last good resources`,
          data: { server: e.server, error: e.error, receivedResponse: e.receivedResponse },
        });
      }
      if (e.kind === 'nack')
        mesh.events.emit('log', {
          level: 'warn',
          scope: 'xds',
          message: `xDS NACK of ${e.typeUrl.slice(e.typeUrl.lastIndexOf('.') + 1)} version ${e.version || '(none)'}: ${e.error}; keeping the last good version`,
          data: { typeUrl: e.typeUrl, version: e.version, error: e.error },
        });
      if (e.kind === 'doesNotExist')
        mesh.events.emit('log', {
          level: 'warn',
          scope: 'xds',
          message: `xDS resource ${e.name} (${e.typeUrl.slice(e.typeUrl.lastIndexOf('.') + 1)}) does not exist`,
          data: { typeUrl: e.typeUrl, name: e.name },
        });
    },
  });
  const reporter = new LoadReporter(mesh, client, {
    backoff: { baseMs: settings?.backoffBaseMs ?? 1_000, maxMs: settings?.backoffMaxMs ?? 30_000 },
    onEvent: (e) => {
      if (e.kind === 'streamError')
        mesh.events.emit('log', {
          level: 'warn',
          scope: 'xds',
          message: `load reporting (LRS) stream failed: ${e.error}; retrying in ${e.retryInMs}ms`,
          data: { error: e.error },
        });
    },
  });
  resolver = new XdsResolver(mesh, client, { hosts: settings?.hosts ?? ['*'], reporter });
  mesh.addResolver(resolver);
  const inbound = setupInboundListeners(mesh, client, settings);
  mesh.addSnapshotSection('xds', () => ({
    bootstrap: bootstrap.source,
    ...client.dump(),
    loadReporting: reporter.dump(),
    ...(inbound ? { inbound: inbound.dump() } : {}),
  }));
  return resolver;
}

/**
 * Servers follow their inbound listeners (gRFC A36) when the bootstrap names a server listener
 * template: the mesh's inbound listener port, with serving transitions logged (A36 asks for them
 * at a default-visible level).
 */
function setupInboundListeners(
  mesh: Mesh,
  client: XdsClient,
  settings: XdsSettings | undefined,
): XdsInboundListeners | undefined {
  const template = client.bootstrap.serverListenerTemplate;
  if (template === undefined || settings?.serverEnabled === false) return undefined;
  const port = new XdsInboundListeners(client, template, {
    drainGraceMs: settings?.drainGraceMs ?? DEFAULT_DRAIN_GRACE_MS,
    onServingChange: ({ name, serving, reason }) =>
      mesh.events.emit('log', {
        level: serving ? 'info' : 'warn',
        scope: 'xds',
        message: serving
          ? `inbound listener ${name}: serving`
          : `inbound listener ${name}: not serving (${reason ?? 'unknown'}); requests are refused with 503 / UNAVAILABLE`,
        data: { listener: name, serving, reason },
      }),
  });
  setInboundListeners(mesh, port);
  mesh.onClose(() => {
    setInboundListeners(mesh, undefined);
    port.close();
  });
  return port;
}

import { resolve } from 'node:path';
import { isMeshError } from '@meshlet/core';
import { startControlPlane } from './server.js';

export interface CommandIo {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  /** Stops the command (default: SIGINT / SIGTERM). */
  signal?: AbortSignal;
  /** Directory a relative `--config` is resolved against (default `process.cwd()`). */
  cwd?: string;
}

const USAGE = `usage: meshlet control-plane --config FILE [--port N] [--host ADDR]
                             [--server-listener-template TEMPLATE]

Serves the services, endpoints, routes and policies of a mesh YAML file over xDS (ADS) and pushes
every change of the file to connected clients. Services' inbound listeners are named by
--server-listener-template (default xds.istio.io/grpc/lds/inbound/%s, istio-agent's), which must
be the workloads' server_listener_resource_name_template. Point clients at it with a gRPC xDS
bootstrap:
  GRPC_XDS_BOOTSTRAP_CONFIG='{"xds_servers":[{"server_uri":"HOST:PORT","channel_creds":[{"type":"insecure"}]}],"node":{"id":"me"}}'
`;

/**
 * `meshlet control-plane --config FILE --port N [--host ADDR]`: runs until SIGINT/SIGTERM (or
 * `io.signal`). Resolves with the exit code.
 */
export async function runControlPlaneCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  let config: string | undefined;
  let port = 18000;
  let host = '0.0.0.0';
  let serverListenerTemplate: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const next = () => argv[++i];
    if (a === '--config' || a === '-c') config = next();
    else if (a.startsWith('--config=')) config = a.slice(9);
    else if (a === '--port' || a === '-p') port = Number(next());
    else if (a.startsWith('--port=')) port = Number(a.slice(7));
    else if (a === '--host') host = next() ?? host;
    else if (a.startsWith('--host=')) host = a.slice(7);
    else if (a === '--server-listener-template') serverListenerTemplate = next();
    else if (a.startsWith('--server-listener-template='))
      serverListenerTemplate = a.slice('--server-listener-template='.length);
    else if (a === '--help' || a === '-h') {
      io.stdout.write(USAGE);
      return 0;
    } else {
      io.stderr.write(`unknown argument "${a}"\n${USAGE}`);
      return 2;
    }
  }
  if (!config) {
    io.stderr.write(`--config is required\n${USAGE}`);
    return 2;
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    io.stderr.write('--port must be 0-65535\n');
    return 2;
  }
  if (serverListenerTemplate !== undefined && !serverListenerTemplate.includes('%s')) {
    io.stderr.write('--server-listener-template must contain %s (the listening address)\n');
    return 2;
  }
  let cp: Awaited<ReturnType<typeof startControlPlane>>;
  try {
    cp = await startControlPlane({
      configFile: resolve(io.cwd ?? process.cwd(), config),
      port,
      host,
      ...(serverListenerTemplate !== undefined ? { serverListenerTemplate } : {}),
      onEvent: (e) => {
        if (e.kind === 'snapshot') io.stdout.write(`serving version ${e.version}\n`);
        else if (e.kind === 'configError')
          io.stderr.write(`config not applied (still serving the last good one): ${e.error}\n`);
        else if (e.kind === 'nack')
          io.stderr.write(`client ${e.node} NACKed ${e.typeUrl} ${e.version}: ${e.error}\n`);
        else if (e.kind === 'loadReport')
          io.stdout.write(
            `load report from ${e.node || '(unknown)'}: ${
              e.clusters
                .map(
                  (c) =>
                    `${c.cluster} issued ${c.issued}, succeeded ${c.succeeded}, errors ${c.errors}, in progress ${c.inProgress}, dropped ${c.dropped}`,
                )
                .join('; ') || 'no load'
            }\n`,
          );
        else if (e.kind === 'stream')
          io.stdout.write(`client ${e.node || '(unknown)'} ${e.open ? 'connected' : 'disconnected'}\n`);
      },
    });
  } catch (err) {
    io.stderr.write(`${isMeshError(err) ? err.message : (err as Error).message}\n`);
    return 1;
  }
  io.stdout.write(`meshlet control plane listening on ${cp.address} (version ${cp.version})\n`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    if (io.signal) {
      if (io.signal.aborted) resolve();
      io.signal.addEventListener('abort', stop, { once: true });
    } else {
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    }
  });
  await cp.close();
  return 0;
}

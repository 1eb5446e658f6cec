import { connect } from 'node:net';
import { s } from '../schema.js';
import type { HealthCheckerFactory, HealthCheckResult, HealthCheckTarget } from './types.js';

const tcpOptions = s.object(
  {},
  { name: 'TcpHealthCheckOptions', doc: 'Healthy when a TCP connection opens within the timeout.' },
);

/** `healthCheck: { type: 'tcp' }` — healthy when a TCP connection opens within the timeout. */
export const tcpHealthChecker: HealthCheckerFactory<Record<string, never>> = {
  name: 'tcp',
  schema: tcpOptions,
  parseConfig(raw, path, issues) {
    tcpOptions.parse(raw, path, issues);
    return {};
  },
  create() {
    return {
      check(target: HealthCheckTarget, signal: AbortSignal): Promise<HealthCheckResult> {
        return new Promise((resolve) => {
          const socket = connect({ host: target.address, port: target.port });
          const done = (result: HealthCheckResult) => {
            signal.removeEventListener('abort', onAbort);
            socket.destroy();
            resolve(result);
          };
          const onAbort = () => done({ healthy: false, reason: 'timeout' });
          if (signal.aborted) return onAbort();
          signal.addEventListener('abort', onAbort, { once: true });
          socket.once('connect', () => done({ healthy: true, reason: 'connected' }));
          socket.once('error', (err: NodeJS.ErrnoException) =>
            done({ healthy: false, reason: err.code ?? err.message }),
          );
        });
      },
    };
  },
};

import { type ChildProcess, fork } from 'node:child_process';

/** A benchmark HTTP server running in a child process (see http-server.mjs). */
export interface ServerProcess {
  readonly port: number;
  readonly origin: string;
  close(): Promise<void>;
}

/** Starts the keep-alive loopback server in its own process, on a free port. */
export async function startServerProcess(): Promise<ServerProcess> {
  const child: ChildProcess = fork(new URL('./http-server.mjs', import.meta.url), [], {
    execArgv: [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`benchmark server exited early (code ${code})`)));
    child.once('message', (m) => resolve((m as { port: number }).port));
  });
  child.removeAllListeners('exit');
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

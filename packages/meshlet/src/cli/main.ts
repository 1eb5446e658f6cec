// The umbrella package's entry registers every config section and extension meshlet ships, so
// that `meshlet validate` knows the same keys `createMesh` does.
import '../index.js';
import { createRequire } from 'node:module';
import { grpcJsSupport } from '@meshlet/grpc/support';
import { CERTS_USAGE, runCertsCommand } from '@meshlet/tls';
import { demoCommand } from './demo.js';
import { type CliCommand, type CliIo, processIo, UsageError } from './io.js';
import { validateCommand } from './validate.js';

/** The command table: name → command. Packages that add commands register here. */
export const commands = new Map<string, CliCommand>();

/** Adds (or replaces) a `meshlet <name>` command. */
export function registerCommand(command: CliCommand): void {
  commands.set(command.name, command);
}

registerCommand(demoCommand);
registerCommand(validateCommand);
// `control-plane` is imported when run, so that the other commands do not load xDS and gRPC.
registerCommand({
  name: 'certs',
  summary: 'development CA and workload certificates with SPIFFE IDs (init, issue, rotate)',
  usage: CERTS_USAGE.trimEnd(),
  run: (argv, io) => runCertsCommand(argv, io),
});
registerCommand({
  name: 'control-plane',
  summary: 'serve a mesh file over xDS (ADS) to meshlet and gRPC clients',
  usage: 'Usage: meshlet control-plane --config FILE [--port N] [--host ADDR]',
  ownHelp: true,
  async run(argv, io) {
    // The control plane serves over the application's grpc-js (an optional peer of meshlet).
    const support = grpcJsSupport();
    if (support.status !== 'supported') {
      io.stderr.write(`meshlet control-plane: ${support.error.message}\n`);
      return 1;
    }
    const { runControlPlaneCommand } = await import('@meshlet/control-plane');
    return runControlPlaneCommand(argv, io);
  },
});

/** The version of the `meshlet` package. */
export function version(): string {
  // By the package's own name (`./package.json` is exported), wherever the build put this code.
  const pkg = createRequire(import.meta.url)('meshlet/package.json') as { version?: string };
  return pkg.version ?? '0.0.0';
}

function help(): string {
  const width = Math.max(...[...commands.keys()].map((n) => n.length));
  const list = [...commands.values()]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`)
    .join('\n');
  return `meshlet ${version()} — a proxyless service mesh for Node.js

Usage: meshlet <command> [options]

Commands:
${list}

Options:
  -h, --help     show this help (or \`meshlet <command> --help\`)
  -v, --version  print the version
`;
}

function isUsageError(err: unknown): boolean {
  // By name too: @meshlet/demo may throw the UsageError of another copy of meshlet.
  if (err instanceof UsageError || (err as Error)?.name === 'UsageError') return true;
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS');
}

/** Runs the CLI with `argv` (without node and script); resolves with the exit code. */
export async function runCli(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  // `pnpm demo -- --duration 10` may hand us the separator itself.
  const args = argv.filter((a, i) => !(a === '--' && i <= 1));
  const [name, ...rest] = args;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    const topic = name === 'help' && rest[0] !== undefined ? commands.get(rest[0]) : undefined;
    io.stdout.write(topic ? `${topic.usage}\n` : help());
    return 0;
  }
  if (name === '-v' || name === '--version') {
    io.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = commands.get(name);
  if (!command) {
    io.stderr.write(`meshlet: unknown command "${name}"\n\n${help()}`);
    return 2;
  }
  if (!command.ownHelp && (rest.includes('--help') || rest.includes('-h'))) {
    io.stdout.write(`${command.usage}\n`);
    return 0;
  }
  try {
    return await command.run(rest, io);
  } catch (err) {
    if (isUsageError(err)) {
      io.stderr.write(`meshlet ${name}: ${(err as Error).message}\n\n${command.usage}\n`);
      return 2;
    }
    io.stderr.write(`meshlet ${name}: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}

import { registerCommand, runCli } from 'meshlet/cli';
import { demoCommand } from './command.js';

// The `meshlet` CLI with its `demo` command backed by this package (the `meshlet` package alone
// only explains where the demo lives).
registerCommand(demoCommand);

/** `meshlet-demo [options]`: runs `meshlet demo [options]`; resolves with the exit code. */
export function main(argv: readonly string[]): Promise<number> {
  return runCli(['demo', ...argv]);
}

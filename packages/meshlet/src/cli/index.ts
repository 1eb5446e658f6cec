// `meshlet/cli`: the `meshlet` command's runner and command table, for packages that add commands
// (`@meshlet/demo` adds `demo`).
export {
  type CliCommand,
  type CliIo,
  type CommandHandler,
  type Paint,
  paint,
  processIo,
  UsageError,
  wantsColor,
} from './io.js';
export { commands, registerCommand, runCli, version } from './main.js';

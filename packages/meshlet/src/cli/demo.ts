import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { CliCommand } from './io.js';

/**
 * What `meshlet demo` says when `@meshlet/demo` is not installed: the demo's servers are Express,
 * Fastify and grpc-js, which the `meshlet` package does not install for its users.
 */
export const DEMO_GUIDE = `The meshlet demo lives in the optional package @meshlet/demo (it brings Express, Fastify and
grpc-js, which the meshlet package does not install). Run it with

  npx @meshlet/demo [--duration <seconds>] [--rps <n>] [--no-mtls] [--no-color]

or install it next to meshlet (npm install --save-dev @meshlet/demo) and run \`meshlet demo\` again.
From a clone of the meshlet repository: pnpm demo.`;

/**
 * `@meshlet/demo`'s command, found from the working directory (the application's node_modules, or
 * the repository's root): `@meshlet/demo` depends on `meshlet`, not the other way round.
 */
async function findDemo(cwd: string): Promise<CliCommand | undefined> {
  let file: string;
  try {
    file = createRequire(join(cwd, 'package.json')).resolve('@meshlet/demo');
  } catch {
    return undefined;
  }
  const mod = (await import(pathToFileURL(file).href)) as { demoCommand?: CliCommand };
  return mod.demoCommand;
}

export const demoCommand: CliCommand = {
  name: 'demo',
  summary: 'run the quickstart: client -> Express -> gRPC + Fastify, meshed, faults injected (@meshlet/demo)',
  usage: `Usage: meshlet demo [options]\n\n${DEMO_GUIDE}`,
  ownHelp: true,
  async run(argv, io) {
    const demo = await findDemo(io.cwd);
    if (demo === undefined) {
      io.stderr.write(`meshlet demo: @meshlet/demo is not installed here.\n\n${DEMO_GUIDE}\n`);
      return 1;
    }
    if (argv.includes('--help') || argv.includes('-h')) {
      io.stdout.write(`${demo.usage}\n`);
      return 0;
    }
    return demo.run(argv, io);
  },
};

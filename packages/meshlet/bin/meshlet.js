#!/usr/bin/env node
// The `meshlet` command: runs the compiled CLI (`pnpm build` produces dist/).
import { runCli } from '../dist/cli/main.js';

process.exitCode = await runCli(process.argv.slice(2));

#!/usr/bin/env node
// The `meshlet-demo` command (`npx @meshlet/demo`): runs the compiled demo (`pnpm build` produces dist/).
import { main } from '../dist/main.js';

process.exitCode = await main(process.argv.slice(2));

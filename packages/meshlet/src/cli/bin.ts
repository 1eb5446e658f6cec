// `pnpm meshlet …` runs this file from the sources (tsx, `meshlet-source`); `bin/meshlet.js` is the
// same for the built package. Kept apart from main.ts, which packages adding commands import.
import { runCli } from './main.js';

process.exitCode = await runCli(process.argv.slice(2));

// `pnpm demo` runs this file from the sources (tsx, `meshlet-source`); `bin/meshlet-demo.js` is the
// same for the built package.
import { main } from './main.js';

process.exitCode = await main(process.argv.slice(2));

import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';

let yaml: typeof Yaml | undefined;

/**
 * The `yaml` package, loaded the first time a file is read rather than on `import 'meshlet'`
 * (~40 ms of CPU and ~9 MB that an application configured in code never needs). `require` keeps
 * `loadConfig` synchronous; Node resolves `yaml` to the same CommonJS build an `import` would.
 */
export function loadYaml(): typeof Yaml {
  yaml ??= createRequire(import.meta.url)('yaml') as typeof Yaml;
  return yaml;
}

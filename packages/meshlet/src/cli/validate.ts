import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  type ConfigIssue,
  checkConfig,
  formatDuration,
  isConfigError,
  type ParsedMeshConfig,
  readConfigFile,
  type ServiceConfig,
} from '@meshlet/core';
import { type CliCommand, type CliIo, paint, wantsColor } from './io.js';

const USAGE = `Usage: meshlet validate [--no-color] <config.yaml|json> [more configs…]

Checks mesh configuration files without starting anything. Prints every problem with its field
path (for example services.reviews.lb) and exits 1 when a file has errors; prints a short summary
of the services and exits 0 when every file is valid.`;

function endpointCount(svc: ServiceConfig): number | undefined {
  const cfg = svc.discovery.config as { endpoints?: unknown } | undefined;
  return Array.isArray(cfg?.endpoints) ? cfg.endpoints.length : undefined;
}

function describeService(svc: ServiceConfig): string {
  const parts: string[] = [];
  const n = endpointCount(svc);
  parts.push(n === undefined ? `discovery=${svc.discovery.type}` : `${n} endpoint${n === 1 ? '' : 's'}`);
  parts.push(`lb=${svc.lb.policy}`);
  parts.push(`timeout=${svc.timeoutMs > 0 ? formatDuration(svc.timeoutMs) : 'none'}`);
  parts.push(`retries=${svc.retry.maxRetries}`);
  if (svc.identity) parts.push(`identity=${svc.identity}`);
  const ext = Object.keys(svc.extensions);
  if (ext.length > 0) parts.push(ext.join(','));
  return parts.join('  ');
}

/** Validates one file; writes its report and returns whether it is valid. */
function validateFile(file: string, io: CliIo, color: boolean): boolean {
  const p = paint(color);
  const abs = resolve(io.cwd, file);
  let issues: readonly ConfigIssue[];
  let config: ParsedMeshConfig | undefined;
  try {
    const raw = readConfigFile(abs);
    const checked = checkConfig(raw, { baseDir: dirname(abs), source: abs, env: io.env });
    issues = checked.issues;
    config = checked.config;
  } catch (err) {
    if (!isConfigError(err)) throw err;
    issues = err.issues;
  }
  if (issues.length > 0 || config === undefined) {
    const n = issues.length;
    io.stdout.write(`${p.red('✗')} ${abs}: ${n} problem${n === 1 ? '' : 's'}\n`);
    for (const issue of issues) {
      io.stdout.write(`  ${p.bold(issue.path === '' ? '(root)' : issue.path)}: ${issue.message}\n`);
    }
    return false;
  }
  const services = Object.values(config.services);
  io.stdout.write(
    `${p.green('✓')} ${abs} is valid: ${services.length} service${services.length === 1 ? '' : 's'}\n`,
  );
  const width = Math.max(0, ...services.map((s) => s.name.length));
  for (const svc of services)
    io.stdout.write(`  ${p.cyan(svc.name.padEnd(width))}  ${describeService(svc)}\n`);
  const ext = Object.keys(config.extensions);
  if (ext.length > 0) io.stdout.write(`  mesh sections: ${ext.join(', ')}\n`);
  return true;
}

export const validateCommand: CliCommand = {
  name: 'validate',
  summary: 'check mesh configuration files and print every problem by field path',
  usage: USAGE,
  async run(argv, io) {
    const { values, positionals } = parseArgs({
      args: [...argv],
      options: { 'no-color': { type: 'boolean' }, color: { type: 'boolean' } },
      allowPositionals: true,
      strict: true,
    });
    if (positionals.length === 0) {
      io.stderr.write(`meshlet validate: no config file given\n\n${USAGE}\n`);
      return 2;
    }
    const color = wantsColor(io, values['no-color'] ? false : values.color);
    let ok = true;
    for (const file of positionals) ok = validateFile(file, io, color) && ok;
    return ok ? 0 : 1;
  },
};

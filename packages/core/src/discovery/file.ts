import { createHash } from 'node:crypto';
import { type FSWatcher, watch } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { parseConfigText } from '../config.js';
import { type ConfigIssue, ErrorCodes, isMeshError, MeshError } from '../errors.js';
import type { Endpoint } from '../model.js';
import { type OutputOf, s } from '../schema.js';
import { checkKeys, isPlainObject, join } from '../validate.js';
import { parseEndpointList } from './endpoints.js';
import type { DiscoveryContext, DiscoveryFactory, DiscoveryListener, DiscoverySource } from './types.js';

export interface FileDiscoveryConfig {
  /** Absolute path of the YAML or JSON endpoints file. */
  readonly path: string;
  /** When set, the file is a map of lists and this key selects the service's list. */
  readonly key: string | undefined;
  /** Safety-net polling interval in ms, for filesystems where change events are lost (5s). */
  readonly pollIntervalMs: number;
}

/**
 * Reads the endpoints of one service from a file and watches it. Accepted shapes: a list of
 * endpoints; `{ endpoints: [...] }`; or, with `key`, a map whose `key` entry is either of those.
 *
 * Edits apply within milliseconds (the directory is watched, so atomic renames and Kubernetes'
 * ConfigMap `..data` symlink swaps are seen). A bad edit or a removed file keeps the last good
 * endpoints and reports why through the listener's `onError` (visible in `snapshot()`).
 */
export class FileSource implements DiscoverySource {
  readonly #config: FileDiscoveryConfig;
  readonly #service: string;
  #listener: DiscoveryListener | undefined;
  #watcher: FSWatcher | undefined;
  #poll: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  /** Fingerprint (mtime, size, inode) and text of the last version read, to skip no-op events. */
  #lastFingerprint = '';
  #lastText: string | undefined;
  #reading: Promise<void> | undefined;
  #again = false;
  #closed = false;

  constructor(config: FileDiscoveryConfig, service: string) {
    this.#config = config;
    this.#service = service;
  }

  start(listener: DiscoveryListener): void {
    this.#listener = listener;
    const dir = dirname(this.#config.path);
    const name = basename(this.#config.path);
    try {
      this.#watcher = watch(dir, { persistent: false }, (_event, file) => {
        // Any change in the directory may be ours (renames, `..data` swaps): re-check after a beat.
        if (file === null || file === name || file.startsWith('..')) this.#schedule();
      });
      this.#watcher.on('error', () => {
        // The directory went away; polling keeps looking for it.
      });
    } catch {
      // The directory does not exist yet: polling finds the file when it appears.
    }
    this.#poll = setInterval(() => this.#check(), this.#config.pollIntervalMs);
    this.#poll.unref();
    this.#check();
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => this.#check(), 20);
    this.#debounce.unref();
  }

  /** Reads the file if it changed; serialised so that two events never race. */
  #check(): void {
    if (this.#closed) return;
    if (this.#reading) {
      this.#again = true;
      return;
    }
    this.#reading = this.#read().finally(() => {
      this.#reading = undefined;
      if (this.#again) {
        this.#again = false;
        this.#check();
      }
    });
  }

  /** Resolves once any read in progress (and any it queued) has finished; for tests and tools. */
  async settled(): Promise<void> {
    while (this.#reading) await this.#reading;
  }

  async #read(): Promise<void> {
    const path = this.#config.path;
    let text: string;
    let fingerprint: string;
    try {
      const st = await stat(path);
      fingerprint = `${st.mtimeMs}:${st.size}:${st.ino}`;
      if (fingerprint === this.#lastFingerprint) return;
      text = await readFile(path, 'utf8');
    } catch (err) {
      if (this.#lastFingerprint === 'missing') return;
      this.#lastFingerprint = 'missing';
      this.#lastText = undefined;
      const reason =
        (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? 'the file does not exist (removed?)'
          : (err as Error).message;
      this.#fail(`cannot read endpoints file ${path}: ${reason}; keeping the last good endpoints`, err);
      return;
    }
    if (this.#closed) return;
    this.#lastFingerprint = fingerprint;
    if (text === this.#lastText) return;
    this.#lastText = text;
    const result = parseEndpointsFile(text, path, this.#config.key);
    if ('error' in result) {
      this.#fail(result.error, undefined);
      return;
    }
    // The version names the content (the same file gives the same version on every host), as
    // `sha256:` and the first 12 hex digits of its SHA-256.
    const version = `sha256:${createHash('sha256').update(text).digest('hex').slice(0, 12)}`;
    this.#listener?.onUpdate({ endpoints: result.endpoints, version });
  }

  #fail(message: string, cause: unknown): void {
    if (this.#closed) return;
    this.#listener?.onError(
      new MeshError(
        ErrorCodes.DISCOVERY,
        message,
        { service: this.#service, path: this.#config.path },
        { cause },
      ),
    );
  }

  close(): void {
    this.#closed = true;
    this.#watcher?.close();
    if (this.#poll) clearInterval(this.#poll);
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#listener = undefined;
  }
}

/** Parses the text of an endpoints file. Every problem is reported with its field path. */
export function parseEndpointsFile(
  text: string,
  source: string,
  key: string | undefined,
): { endpoints: Endpoint[] } | { error: string } {
  let raw: unknown;
  try {
    raw = parseConfigText(text, source);
  } catch (err) {
    return { error: isMeshError(err) ? err.message : String(err) };
  }
  const issues: ConfigIssue[] = [];
  let path = '';
  if (key !== undefined) {
    if (!isPlainObject(raw) || !(key in raw)) {
      return {
        error: `invalid endpoints file ${source}: no entry "${key}" (the file must map service keys to endpoint lists)`,
      };
    }
    raw = raw[key];
    path = key;
  }
  if (isPlainObject(raw)) {
    checkKeys(raw, ['endpoints'], path, issues);
    raw = raw.endpoints;
    path = join(path, 'endpoints');
  }
  const endpoints = parseEndpointList(raw ?? [], path || 'endpoints', issues);
  if (issues.length > 0) {
    return {
      error: `invalid endpoints file ${source}; keeping the last good endpoints:\n${issues.map((i) => `  - ${i.path}: ${i.message}`).join('\n')}`,
    };
  }
  return { endpoints };
}

const fileOptions = s.object(
  {
    path: s.string({
      required: 'is required, got undefined',
      doc: "The endpoints file (YAML or JSON), relative to the config file's directory.",
    }),
    key: s.string({
      defaultText: 'none: the file holds one list',
      doc: 'The entry of a shared file that maps service keys to endpoint lists (one ConfigMap for many services).',
    }),
    pollInterval: s.duration({
      default: '5s',
      doc: 'Safety-net re-check for filesystems that lose change events.',
    }),
  },
  {
    name: 'FileDiscoveryInput',
    doc: 'Endpoints from a watched YAML/JSON file: a list, `{ endpoints: [...] }`, or a map of lists with `key`.',
  },
);

function toFileConfig(o: OutputOf<typeof fileOptions> | undefined, baseDir: string): FileDiscoveryConfig {
  return Object.freeze({
    path: resolve(baseDir, o?.path ?? '.'),
    key: o?.key,
    pollIntervalMs: o?.pollInterval ?? 5000,
  });
}

/** `file: ./endpoints.yaml` or `discovery: { type: file, path, key?, pollInterval? }`. */
export const fileDiscovery: DiscoveryFactory<FileDiscoveryConfig> = {
  name: 'file',
  shorthand: 'file',
  schema: fileOptions,
  shorthandSchema: s.union([s.string(), fileOptions], {
    doc: 'Endpoints from a watched file: its path, or `{ path, key?, pollInterval? }`.',
    defaultText: 'none',
  }),
  parseShorthand(value, path, issues, baseDir) {
    if (typeof value === 'string') {
      const p = s.string().parse(value, path, issues);
      return toFileConfig(
        p === undefined ? undefined : { path: p, key: undefined, pollInterval: 5000 },
        baseDir,
      );
    }
    return toFileConfig(fileOptions.parse(value, path, issues), baseDir);
  },
  parseConfig(raw, path, issues, baseDir) {
    return toFileConfig(fileOptions.parse(raw, path, issues), baseDir);
  },
  create(config, ctx: DiscoveryContext) {
    return new FileSource(config, ctx.service);
  },
};

import { type FSWatcher, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import {
  createSecureContext,
  type SecureContext,
  type SecureContextOptions,
  type SecureVersion,
} from 'node:tls';
import { isMeshError } from '@meshlet/core';
import {
  type MaterialFiles,
  type RawMaterial,
  readFiles,
  readFilesSync,
  readMaterial,
  readMaterialSync,
  type TlsLayout,
  type TlsMaterial,
  validateMaterial,
} from './material.js';
import { splitPemCertificates } from './pem.js';

export interface CertificateSourceOptions {
  /**
   * The mounted directory (Kubernetes TLS Secret, SPIFFE or Istio layout); with `files`, the
   * source's name in messages and status (e.g. `certificate_providers.default`).
   */
  readonly dir: string;
  /**
   * Read these files instead of a directory's layout (an xDS bootstrap `file_watcher`
   * certificate provider): the certificate chain and key, the root certificates, or all three.
   * Each file's directory is watched; `pollIntervalMs` is the provider's `refresh_interval`.
   */
  readonly files?: MaterialFiles | undefined;
  /** Force a layout instead of detecting it from the file names. */
  readonly layout?: TlsLayout | undefined;
  /** Watch the directory for changes (default true). */
  readonly watch?: boolean | undefined;
  /** Quiet period after the last change before re-reading, in ms (default 100). */
  readonly debounceMs?: number | undefined;
  /** Re-read on this period too, in case a change notification was lost, in ms (default 60s; 0 = never). */
  readonly pollIntervalMs?: number | undefined;
  /**
   * Warn this long before the certificate expires, in ms. Default: when a fifth of the
   * certificate's lifetime remains.
   */
  readonly warnBeforeMs?: number | undefined;
  /** Lowest TLS version (default `TLSv1.2`; TLS 1.3 is always preferred when both sides have it). */
  readonly minVersion?: SecureVersion | undefined;
  /** The certificate must carry one workload SPIFFE ID (default true): `MESHLET_ERR_TLS` otherwise. */
  readonly requireSpiffeId?: boolean | undefined;
  /** Clock in ms since the epoch (tests). */
  readonly now?: (() => number) | undefined;
}

export interface RotationEvent {
  readonly previous: TlsMaterial;
  readonly current: TlsMaterial;
}

export interface RejectionEvent {
  /** Why the new files were not used (`MESHLET_ERR_TLS`, `details.reason`). */
  readonly error: Error;
  /** The material that stays in use. */
  readonly current: TlsMaterial;
}

export interface ExpiryEvent {
  readonly material: TlsMaterial;
  readonly expiresAt: Date;
  readonly remainingMs: number;
}

interface SourceEvents {
  rotate: RotationEvent;
  reject: RejectionEvent;
  expiring: ExpiryEvent;
}

/** Context options without the parts a provider does not hold (roots only, or an identity only). */
function present(o: {
  key: string;
  cert: string;
  ca: string[];
  minVersion: SecureVersion;
}): SecureContextOptions {
  const out: SecureContextOptions = { minVersion: o.minVersion };
  if (o.key !== '') {
    out.key = o.key;
    out.cert = o.cert;
  }
  if (o.ca.length > 0) out.ca = o.ca;
  return out;
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

type Listener<K extends keyof SourceEvents> = (e: SourceEvents[K]) => void;

/** Counters and state of a source, JSON-serialisable (snapshot, admin page, metrics). */
export interface CertificateSourceStatus {
  dir: string;
  layout: TlsLayout;
  spiffeId: string | undefined;
  subject: string;
  serialNumber: string;
  fingerprint256: string;
  notBefore: string;
  notAfter: string;
  expiresInSeconds: number;
  caCount: number;
  loadedAt: string;
  rotations: number;
  rejections: number;
  lastError: string | undefined;
  lastErrorAt: string | undefined;
}

/**
 * Certificates from a mounted directory, validated and hot-reloaded. Reads synchronously once at
 * construction (throws `MESHLET_ERR_TLS` when the files are missing or invalid), then — after
 * `start()` — watches the directory (Kubernetes' atomic `..data` symlink swap included), debounces
 * bursts of changes, re-reads, validates, and either rotates (`rotate` event) or keeps the last
 * good material and reports why (`reject` event).
 */
export class CertificateSource {
  readonly dir: string;
  readonly #options: CertificateSourceOptions;
  readonly #now: () => number;
  #material: TlsMaterial;
  #context: SecureContext | undefined;
  readonly #watchers: FSWatcher[] = [];
  #debounce: NodeJS.Timeout | undefined;
  #poll: NodeJS.Timeout | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  #reloading: Promise<void> | undefined;
  #again = false;
  #closed = false;
  #rotations = 0;
  #rejections = 0;
  #lastError: string | undefined;
  #lastErrorAt: number | undefined;
  #warnedFor: string | undefined;
  #lastRejected: string | undefined;
  readonly #listeners: { [K in keyof SourceEvents]: Listener<K>[] } = {
    rotate: [],
    reject: [],
    expiring: [],
  };

  constructor(options: CertificateSourceOptions) {
    this.dir = options.dir;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    const files = options.files;
    const { layout, raw } = files
      ? { layout: options.layout, raw: readFilesSync(options.dir, files) }
      : readMaterialSync(options.dir, options.layout);
    this.#material = this.#validate(raw, layout);
  }

  #validate(raw: RawMaterial, layout: TlsLayout | undefined): TlsMaterial {
    return validateMaterial(raw, {
      dir: this.dir,
      ...(layout !== undefined ? { layout } : {}),
      now: this.#now(),
      requireSpiffeId: this.#options.requireSpiffeId,
      partial: this.#options.files !== undefined,
    });
  }

  /** Whether the material has a certificate and key to present (a provider may hold roots only). */
  get hasIdentity(): boolean {
    return this.#material.cert !== '';
  }

  /** Whether the material has root certificates to verify peers with. */
  get hasRoots(): boolean {
    return this.#material.ca !== '';
  }

  /** The material in use. */
  get current(): TlsMaterial {
    return this.#material;
  }

  /** When the certificate in use expires. */
  get expiresAt(): Date {
    return this.#material.notAfter;
  }

  get minVersion(): SecureVersion {
    return this.#options.minVersion ?? 'TLSv1.2';
  }

  /** PEM material for gRPC channel credentials and the like: `{ ca, key, cert }` as Buffers. */
  pem(): { ca: Buffer; key: Buffer; cert: Buffer } {
    const o = this.secureContextOptions();
    return { ca: Buffer.from(`${o.ca.join('\n')}\n`), key: Buffer.from(o.key), cert: Buffer.from(o.cert) };
  }

  /**
   * A `tls.SecureContext` holding the current key, certificate chain and trust bundle; rebuilt
   * once per rotation and shared by every new connection.
   */
  secureContext(): SecureContext {
    this.#context ??= createSecureContext(present(this.secureContextOptions()));
    return this.#context;
  }

  /** Options for `tls.createSecureContext` / `server.setSecureContext` from the current material. */
  secureContextOptions(m: TlsMaterial = this.#material): {
    key: string;
    cert: string;
    ca: string[];
    minVersion: SecureVersion;
  } {
    // Re-joined block by block: a bundle whose PEM blocks lack a newline between them would
    // otherwise lose every CA after the first in OpenSSL's parser.
    return {
      key: m.key,
      cert: `${splitPemCertificates(m.cert).join('\n')}\n`,
      ca: splitPemCertificates(m.ca),
      minVersion: this.minVersion,
    };
  }

  on<K extends keyof SourceEvents>(name: K, listener: Listener<K>): () => void {
    const list = this.#listeners[name] as Listener<K>[];
    list.push(listener);
    return () => {
      const i = list.indexOf(listener);
      if (i >= 0) list.splice(i, 1);
    };
  }

  #emit<K extends keyof SourceEvents>(name: K, event: SourceEvents[K]): void {
    for (const l of [...(this.#listeners[name] as Listener<K>[])]) {
      try {
        l(event);
      } catch (err) {
        process.emitWarning(
          `meshlet: a TLS '${name}' listener threw: ${(err as Error)?.message}`,
          'MeshletWarning',
        );
      }
    }
  }

  /** Starts watching (idempotent). */
  start(): this {
    if (this.#closed || this.#watchers.length > 0 || this.#poll) return this;
    if (this.#options.watch !== false) {
      const files = this.#options.files;
      // A directory: any change in it; files: a change of one of their names in their directories.
      const watched = files
        ? [
            ...new Set(
              [files.cert, files.key, files.ca].filter((f) => f !== undefined).map((f) => dirname(f)),
            ),
          ]
        : [this.dir];
      const names = files
        ? new Set([files.cert, files.key, files.ca].filter((f) => f !== undefined).map((f) => basename(f)))
        : undefined;
      for (const d of watched) {
        try {
          const w = watch(d, { persistent: false }, (_e, name) => {
            // Kubernetes' atomic writer swaps `..data`; anything else outside the files is noise.
            if (names === undefined || name === null || names.has(name) || name.startsWith('..'))
              this.#schedule();
          });
          w.on('error', (err) => this.#recordError(err));
          this.#watchers.push(w);
        } catch (err) {
          this.#recordError(err);
        }
      }
    }
    const poll = this.#options.pollIntervalMs ?? 60_000;
    if (poll > 0) {
      this.#poll = setInterval(() => {
        void this.reload();
      }, poll);
      this.#poll.unref();
    }
    this.#armExpiry();
    return this;
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      void this.reload();
    }, this.#options.debounceMs ?? 100);
    this.#debounce.unref();
  }

  /**
   * Re-reads the directory now. Resolves once the files were read and either used or rejected
   * (never rejects). Concurrent calls coalesce.
   */
  reload(): Promise<void> {
    if (this.#reloading) {
      this.#again = true;
      return this.#reloading;
    }
    this.#reloading = this.#reloadLoop().finally(() => {
      this.#reloading = undefined;
    });
    return this.#reloading;
  }

  async #reloadLoop(): Promise<void> {
    do {
      this.#again = false;
      await this.#reloadOnce();
    } while (this.#again && !this.#closed);
  }

  async #reloadOnce(): Promise<void> {
    if (this.#closed) return;
    let next: TlsMaterial;
    try {
      const files = this.#options.files;
      const { layout, raw } = files
        ? { layout: this.#options.layout, raw: await readFiles(this.dir, files) }
        : await readMaterial(this.dir, this.#options.layout);
      const cur = this.#material;
      if (raw.cert === cur.cert && raw.key === cur.key && raw.ca === cur.ca) {
        this.#checkExpiry();
        return;
      }
      const fingerprint = `${raw.cert}\0${raw.key}\0${raw.ca}`;
      try {
        next = this.#validate(raw, layout);
        this.#lastRejected = undefined;
      } catch (err) {
        // The same bad files seen again (several change events for one write): reported once.
        if (fingerprint === this.#lastRejected) return;
        this.#lastRejected = fingerprint;
        throw err;
      }
    } catch (err) {
      if (this.#closed) return;
      this.#rejections++;
      this.#recordError(err);
      this.#emit('reject', { error: err as Error, current: this.#material });
      return;
    }
    // Validation and building the context are the only synchronous steps: run them in separate
    // turns of the event loop so that a rotation never stalls it for their sum.
    await nextTurn();
    if (this.#closed) return;
    let context: SecureContext;
    try {
      context = createSecureContext(present(this.secureContextOptions(next)));
    } catch (err) {
      this.#rejections++;
      this.#recordError(err);
      this.#emit('reject', { error: err as Error, current: this.#material });
      return;
    }
    await nextTurn();
    if (this.#closed) return;
    const previous = this.#material;
    this.#material = next;
    this.#context = context;
    this.#rotations++;
    this.#armExpiry();
    this.#emit('rotate', { previous, current: next });
  }

  #recordError(err: unknown): void {
    this.#lastError = isMeshError(err) ? err.message : `${(err as Error)?.message ?? err}`;
    this.#lastErrorAt = this.#now();
  }

  #warnBefore(m: TlsMaterial): number {
    return this.#options.warnBeforeMs ?? (m.notAfter.getTime() - m.notBefore.getTime()) / 5;
  }

  #armExpiry(): void {
    if (this.#expiryTimer) clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    if (this.#closed) return;
    const m = this.#material;
    const warnAt = m.notAfter.getTime() - this.#warnBefore(m);
    const delay = warnAt - this.#now();
    if (delay <= 0) {
      this.#checkExpiry();
      return;
    }
    this.#expiryTimer = setTimeout(() => this.#checkExpiry(), Math.min(delay, 2_147_483_647));
    this.#expiryTimer.unref();
  }

  #checkExpiry(): void {
    const m = this.#material;
    const remainingMs = m.notAfter.getTime() - this.#now();
    if (remainingMs > this.#warnBefore(m)) {
      this.#armExpiry();
      return;
    }
    if (this.#warnedFor === m.fingerprint256) return;
    this.#warnedFor = m.fingerprint256;
    this.#emit('expiring', { material: m, expiresAt: m.notAfter, remainingMs });
  }

  status(): CertificateSourceStatus {
    const m = this.#material;
    return {
      dir: this.dir,
      layout: m.layout,
      spiffeId: m.spiffeId,
      subject: m.subject,
      serialNumber: m.serialNumber,
      fingerprint256: m.fingerprint256,
      notBefore: m.notBefore.toISOString(),
      notAfter: m.notAfter.toISOString(),
      expiresInSeconds: Math.round((m.notAfter.getTime() - this.#now()) / 1000),
      caCount: m.caCount,
      loadedAt: new Date(m.loadedAt).toISOString(),
      rotations: this.#rotations,
      rejections: this.#rejections,
      lastError: this.#lastError,
      lastErrorAt: this.#lastErrorAt === undefined ? undefined : new Date(this.#lastErrorAt).toISOString(),
    };
  }

  /** Stops watching and every timer. */
  close(): void {
    this.#closed = true;
    for (const w of this.#watchers.splice(0)) w.close();
    if (this.#debounce) clearTimeout(this.#debounce);
    if (this.#poll) clearInterval(this.#poll);
    if (this.#expiryTimer) clearTimeout(this.#expiryTimer);
    this.#debounce = this.#poll = this.#expiryTimer = undefined;
  }
}

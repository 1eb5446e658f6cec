import { buildConnector, Dispatcher, Pool } from 'undici';

/**
 * The floor under the mesh's dispatcher, for the benchmarks: a dispatcher with no pipeline. It
 * finds the route's pool by origin (a Map lookup, as the mesh's route cache does) and hands undici
 * a handler that forwards every callback, reading the clock at dispatch and at the end as the
 * mesh does for an attempt's latency. Its pool is made as the mesh makes an endpoint's (origin
 * `http://<service>`, a connector that dials the endpoint's address). What it costs over a raw
 * pool is what any dispatcher in front of undici costs; what the mesh costs over it is the mesh.
 */
class Thin extends Dispatcher {
  readonly #routes: Map<string, Pool>;
  constructor(routes: Map<string, Pool>) {
    super();
    this.#routes = routes;
  }
  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const target = this.#routes.get(String(opts.origin)) as Pool;
    return target.dispatch(opts, new Forward(handler as Forward['h'], performance.now()));
  }
  /** Closes its pools. */
  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    const p = Promise.all([...this.#routes.values()].map((pool) => pool.close())).then(() => {});
    if (callback === undefined) return p;
    p.then(callback, callback);
  }
}

/** Forwards undici's callbacks, and reads the clock at the end as the mesh does for its latency. */
class Forward {
  static elapsed = 0;
  constructor(
    readonly h: Required<
      Pick<Dispatcher.DispatchHandler, 'onConnect' | 'onHeaders' | 'onData' | 'onComplete' | 'onError'>
    >,
    readonly start: number,
  ) {}
  onConnect(abort: (err?: Error) => void): void {
    this.h.onConnect(abort);
  }
  onHeaders(status: number, raw: Buffer[], resume: () => void, text: string): boolean {
    return this.h.onHeaders(status, raw, resume, text);
  }
  onData(chunk: Buffer): boolean {
    return this.h.onData(chunk);
  }
  onComplete(trailers: string[] | null): void {
    Forward.elapsed += performance.now() - this.start;
    this.h.onComplete(trailers);
  }
  onError(err: Error): void {
    this.h.onError(err);
  }
}

/** A thin dispatcher for `origin` (`http://bench`) over one pool dialing 127.0.0.1:`port`; `close()` closes the pool. */
export function thinDispatcher(origin: string, port: number): Dispatcher {
  const base = buildConnector({ timeout: 10_000 });
  const pool = new Pool(origin, {
    keepAliveTimeout: 4_000,
    connect: (opts, cb) => base({ ...opts, hostname: '127.0.0.1', port: String(port) }, cb),
  });
  return new Thin(new Map([[origin, pool]]));
}

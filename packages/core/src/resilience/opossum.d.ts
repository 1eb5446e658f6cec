// The part of opossum 9's API meshlet uses (the package ships no type declarations).
declare module 'opossum' {
  import { EventEmitter } from 'node:events';

  interface CircuitBreakerOptions {
    timeout?: number | false;
    resetTimeout?: number;
    errorThresholdPercentage?: number;
    rollingCountTimeout?: number;
    rollingCountBuckets?: number;
    rollingPercentilesEnabled?: boolean;
    volumeThreshold?: number;
    errorFilter?: (err: unknown) => boolean;
    enableSnapshots?: boolean;
    name?: string;
  }

  interface CircuitBreakerStats {
    fires: number;
    failures: number;
    successes: number;
    rejects: number;
  }

  class CircuitBreaker<A extends unknown[] = unknown[], R = unknown> extends EventEmitter {
    constructor(action: (...args: A) => Promise<R>, options?: CircuitBreakerOptions);
    fire(...args: A): Promise<R>;
    open(): void;
    close(): void;
    shutdown(): void;
    readonly opened: boolean;
    readonly closed: boolean;
    readonly halfOpen: boolean;
    readonly pendingClose: boolean;
    readonly stats: CircuitBreakerStats;
  }

  export default CircuitBreaker;
}

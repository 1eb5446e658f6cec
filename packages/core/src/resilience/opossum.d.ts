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

  /** The rolling-window counters (`circuit.status`). */
  interface CircuitBreakerStatus {
    increment(property: 'fires' | 'successes' | 'failures', latencyRunTime?: number): void;
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
    readonly status: CircuitBreakerStatus;
    readonly warmUp: boolean;
    readonly volumeThreshold: number;
  }

  export default CircuitBreaker;
}

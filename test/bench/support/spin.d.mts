/** Types of `spin.mjs`: a known per-request cost (a calibrated hot loop). */
/** Runs `n` iterations of the loop. */
export declare function spin(n: number): void;
/** How many iterations take `ns` nanoseconds in a tight loop, once optimized. */
export declare function spinIterations(ns: number): number;

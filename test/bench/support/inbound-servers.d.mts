/** Types of `inbound-servers.mjs` for the TypeScript harnesses that import it in process. */
/** The port the server listens on (127.0.0.1). */
export declare const port: number;
/** The meshlet packages the process loaded (core's `runningProcessLoad` among them), or undefined. */
export declare const meshlet: { runningProcessLoad(): { stop(): void } | undefined } | undefined;

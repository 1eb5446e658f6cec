/** The package version reported as the tracer/instrumentation version. */
export const VERSION = '0.1.0';

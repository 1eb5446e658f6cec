/**
 * Envoy's default `re2.max_program_size.error_level`. Its own module so that the `xds:` config
 * section (`@meshlet/xds/config`) can default to it without loading the regex engine.
 */
export const DEFAULT_MAX_PROGRAM_SIZE = 100;

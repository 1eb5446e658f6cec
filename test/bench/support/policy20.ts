/**
 * The servers bench's policy and deadline trust, as data only (no meshlet module is loaded by
 * importing this): `admission.ts` measures them in process, and the parent passes them to the
 * server processes (`inbound-servers.mjs`, `MESHLET_BENCH_INBOUND`).
 */
import type { AuthorizationPolicy } from '../../../packages/tls/src/index.js';

/**
 * A 20-rule ALLOW policy whose last rule admits the benchmark's route (`GET /items/*` from any
 * mesh or loopback peer), so every request walks all twenty.
 */
export const POLICY_20: AuthorizationPolicy[] = [
  {
    name: 'twenty-rules',
    action: 'ALLOW',
    rules: [
      ...Array.from({ length: 19 }, (_, i) => ({
        from: [{ source: { principals: [`cluster.local/ns/team${i}/sa/*`] } }],
        to: [{ operation: { methods: ['GET', 'POST'], paths: [`/svc${i}/*`, `/api/v${i}/*`] } }],
      })),
      { to: [{ operation: { methods: ['GET', 'HEAD'], paths: ['/items/*', '/health'] } }] },
    ],
  },
];

/** Deadline headers from loopback count (the bench's requests carry one, as meshed callers' do). */
export const BENCH_DEADLINES = { trustedNetworks: ['127.0.0.0/8', '::1'] };

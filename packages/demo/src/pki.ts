import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCa, issueWorkloadCertificate, writeCertDirectory } from '@meshlet/tls';

/** The trust domain and namespace of the demo's workloads. */
export const TRUST_DOMAIN = 'cluster.local';
export const NAMESPACE = 'demo';

/** `spiffe://cluster.local/ns/demo/sa/<workload>` */
export function spiffeIdOf(workload: string): string {
  return `spiffe://${TRUST_DOMAIN}/ns/${NAMESPACE}/sa/${workload}`;
}

export interface DemoPki {
  /** The certificate directory (`tls.crt`, `tls.key`, `ca.crt`) of each workload. */
  dirOf(workload: string): string;
  close(): Promise<void>;
}

/**
 * A development CA and one workload certificate per workload (its SPIFFE ID names it), each in
 * its own directory under a temporary root, laid out as a Kubernetes TLS Secret volume.
 */
export async function createDemoPki(workloads: readonly string[]): Promise<DemoPki> {
  const root = await mkdtemp(join(tmpdir(), 'meshlet-demo-'));
  try {
    const ca = await createCa({ commonName: 'meshlet demo CA' });
    const dirs = new Map<string, string>();
    for (const w of workloads) {
      const cert = await issueWorkloadCertificate({ ca, spiffeId: spiffeIdOf(w) });
      const dir = join(root, w);
      await writeCertDirectory(dir, { cert: cert.cert, key: cert.key, ca: ca.cert });
      dirs.set(w, dir);
    }
    return {
      dirOf(workload) {
        const d = dirs.get(workload);
        if (d === undefined) throw new Error(`no demo certificate for "${workload}"`);
        return d;
      },
      close: () => rm(root, { recursive: true, force: true }),
    };
  } catch (err) {
    await rm(root, { recursive: true, force: true });
    throw err;
  }
}

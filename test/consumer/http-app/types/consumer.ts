// A TypeScript service using meshlet's public API; compiled with `moduleResolution` nodenext and
// bundler against the installed tarballs (their .d.ts files, not the sources).
import { createMesh, isMeshError, type Mesh, MeshError, type MeshSnapshot } from 'meshlet';
import pkg from 'meshlet/package.json' with { type: 'json' };

export async function main(): Promise<number> {
  const mesh: Mesh = await createMesh({
    services: { reviews: { endpoints: ['127.0.0.1:9001', '127.0.0.1:9002'], lb: 'peak_ewma' } },
  });
  await mesh.ready();
  try {
    const res = await mesh.fetch('http://reviews/products/42', { method: 'GET' });
    const status: number = res.status;
    const snapshot: MeshSnapshot = mesh.snapshot();
    const restore: () => void = mesh.installGlobalDispatcher();
    restore();
    console.log(pkg.version, status, Object.keys(snapshot.services));
    return status;
  } catch (err) {
    if (isMeshError(err)) {
      const code: string = err.code;
      console.error(code, err instanceof MeshError);
    }
    return 1;
  } finally {
    await mesh.close();
  }
}

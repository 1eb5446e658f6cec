// Compiled only when meshlet exports its typed config (`MeshConfig`): misspelt keys and unknown
// policy names must then be compile errors. Each @ts-expect-error fails the build if the line
// compiles.
import { createMesh } from 'meshlet';

export async function typos(): Promise<void> {
  // @ts-expect-error `servicez` is not a config key
  await createMesh({ servicez: {} });
  // @ts-expect-error `fastest` is not a load-balancing policy
  await createMesh({ services: { reviews: { endpoints: ['127.0.0.1:9001'], lb: 'fastest' } } });
  // A correct config compiles.
  await createMesh({ services: { reviews: { endpoints: ['127.0.0.1:9001'], lb: 'round_robin' } } });
}

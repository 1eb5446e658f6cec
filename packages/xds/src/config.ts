// `@meshlet/xds/config`: the `xds:` config section and the gRPC bootstrap, without the xDS client.
// It loads neither grpc-js nor protobufjs, so `meshlet` imports it up front (`meshlet validate`
// and `createMesh` know the `xds:` keys) and imports `@meshlet/xds` itself only when
// `xdsBootstrapFor` finds a bootstrap.
import { registerXdsConfig } from './setup.js';

registerXdsConfig();

export {
  type Bootstrap,
  bootstrapFromEnv,
  type ChannelCreds,
  parseBootstrap,
  readBootstrapFile,
  type XdsNode,
  type XdsServer,
} from './bootstrap.js';
export type { XdsBackoffInput, XdsInput } from './config-types.generated.js';
export { registerXdsConfig, type XdsSettings, xdsBootstrapFor } from './setup.js';

import { registerTlsConfig } from './config.js';

registerTlsConfig();

export {
  AUTHORIZATION_ACTIONS,
  type AuthorizationAction,
  type AuthorizationConfig,
  type AuthorizationDecision,
  type AuthorizationMode,
  type AuthorizationPolicy,
  type Authorizer,
  type AuthorizerOptions,
  type AuthorizerStats,
  CONDITION_KEYS,
  type Condition,
  createAuthorizer,
  forbiddenBody,
  forbiddenError,
  forbiddenResponse,
  type HeaderCondition,
  type HeaderSource,
  headerValue,
  namespaceOf,
  type Operation,
  parseAuthorization,
  parseAuthorizationSection,
  parsePolicies,
  parsePolicy,
  type RequestAttributes,
  type RequestAuthorizer,
  type RequestCondition,
  type Rule,
  rfc2253Subject,
  type Source,
  type StringMatch,
} from './authz/index.js';
export {
  type CertFiles,
  type CreateCaOptions,
  createCa,
  type IssueOptions,
  issueWorkloadCertificate,
  type PemPair,
  type RotateOptions,
  rotateCertDirectory,
  writeCertDirectory,
} from './ca.js';
export { CERTS_USAGE, type CertsIo, certsCommand, runCertsCommand } from './cli.js';
export {
  type Connector,
  createConnectProvider,
  createTlsConnector,
  type TlsConnectorOptions,
  type TlsSourceLookup,
  verifyPeerIdentity,
} from './client.js';
export { parseTlsSettings, registerTlsConfig, type ServiceTlsSetting, type TlsSettings } from './config.js';
export type {
  AuthorizationConditionInput,
  AuthorizationInput,
  AuthorizationOperationInput,
  AuthorizationPolicyInput,
  AuthorizationPolicyObjectInput,
  AuthorizationPolicySpecInput,
  AuthorizationRuleInput,
  AuthorizationSourceInput,
  TlsInput,
} from './config-types.generated.js';
export {
  createMeshHttpServer,
  type MeshHttp2RequestListener,
  MeshHttpServer,
  type MeshHttpServerOptions,
} from './inbound-server.js';
export { getMeshTls, MeshTls, type MeshTlsOptions, type MeshTlsSnapshot, meshTlsFor } from './manager.js';
export {
  detectLayout,
  LAYOUT_FILES,
  type RawMaterial,
  readMaterial,
  readMaterialSync,
  TLS_LAYOUTS,
  type TlsLayout,
  type TlsMaterial,
  validateMaterial,
} from './material.js';
export {
  matchesIdentity,
  parseCertificates,
  parseSpiffeId,
  type SpiffeId,
  spiffeIdOf,
  splitPemCertificates,
  uriSans,
} from './pem.js';
export {
  createHttp2Server,
  createHttpsServer,
  createPermissiveListener,
  type MeshServerTlsOptions,
  peerIdentity,
  requestAttributes,
  rotateServerContext,
  type ServerTlsMode,
} from './server.js';
export {
  CertificateSource,
  type CertificateSourceOptions,
  type CertificateSourceStatus,
  type ExpiryEvent,
  type RejectionEvent,
  type RotationEvent,
} from './source.js';

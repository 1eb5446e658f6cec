import { fileURLToPath } from 'node:url';
import {
  type CallOptions,
  type ChannelCredentials,
  type Client,
  type ClientDuplexStream,
  type ClientOptions,
  type ClientReadableStream,
  type ClientUnaryCall,
  type ClientWritableStream,
  type GrpcObject,
  loadPackageDefinition,
  type Metadata,
  type ServiceClientConstructor,
  type ServiceDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

// The interop messages as @grpc/proto-loader decodes them (keepCase, defaults, enums as strings).

export interface Payload {
  type?: 'COMPRESSABLE';
  body?: Buffer;
}
export interface BoolValue {
  value?: boolean;
}
export interface EchoStatus {
  code?: number;
  message?: string;
}
export interface SimpleRequest {
  response_type?: 'COMPRESSABLE';
  response_size?: number;
  payload?: Payload | null;
  fill_username?: boolean;
  fill_oauth_scope?: boolean;
  response_compressed?: BoolValue | null;
  response_status?: EchoStatus | null;
  expect_compressed?: BoolValue | null;
  fill_server_id?: boolean;
}
export interface SimpleResponse {
  payload?: Payload | null;
  username?: string;
  oauth_scope?: string;
  server_id?: string;
  hostname?: string;
}
export interface StreamingInputCallRequest {
  payload?: Payload | null;
  expect_compressed?: BoolValue | null;
}
export interface StreamingInputCallResponse {
  aggregated_payload_size?: number;
}
export interface ResponseParameters {
  size?: number;
  interval_us?: number;
  compressed?: BoolValue | null;
}
export interface StreamingOutputCallRequest {
  response_type?: 'COMPRESSABLE';
  response_parameters?: ResponseParameters[];
  payload?: Payload | null;
  response_status?: EchoStatus | null;
}
export interface StreamingOutputCallResponse {
  payload?: Payload | null;
}
export type Empty = Record<string, never>;

export type UnaryCallback<T> = (err: ServiceError | null, value?: T) => void;

/** A `grpc.testing.TestService` client (the methods under their proto names). */
export interface TestServiceClient extends Client {
  EmptyCall(req: Empty, md: Metadata, opts: CallOptions, cb: UnaryCallback<Empty>): ClientUnaryCall;
  UnaryCall(
    req: SimpleRequest,
    md: Metadata,
    opts: CallOptions,
    cb: UnaryCallback<SimpleResponse>,
  ): ClientUnaryCall;
  StreamingOutputCall(
    req: StreamingOutputCallRequest,
    md: Metadata,
    opts: CallOptions,
  ): ClientReadableStream<StreamingOutputCallResponse>;
  StreamingInputCall(
    md: Metadata,
    opts: CallOptions,
    cb: UnaryCallback<StreamingInputCallResponse>,
  ): ClientWritableStream<StreamingInputCallRequest>;
  FullDuplexCall(
    md: Metadata,
    opts: CallOptions,
  ): ClientDuplexStream<StreamingOutputCallRequest, StreamingOutputCallResponse>;
  UnimplementedCall(req: Empty, md: Metadata, opts: CallOptions, cb: UnaryCallback<Empty>): ClientUnaryCall;
}

/** A `grpc.testing.UnimplementedService` client. */
export interface UnimplementedServiceClient extends Client {
  UnimplementedCall(req: Empty, md: Metadata, opts: CallOptions, cb: UnaryCallback<Empty>): ClientUnaryCall;
}

/** A `meshlet.conformance.IdempotentService` client. */
export interface IdempotentServiceClient extends Client {
  IdempotentUnaryCall(
    req: SimpleRequest,
    md: Metadata,
    opts: CallOptions,
    cb: UnaryCallback<SimpleResponse>,
  ): ClientUnaryCall;
}

export type ClientCtor<T extends Client> = new (
  address: string,
  credentials: ChannelCredentials,
  options?: ClientOptions,
) => T;

const packageDefinition = loadSync(['test.proto', 'conformance.proto'], {
  includeDirs: [fileURLToPath(new URL('./protos', import.meta.url))],
  keepCase: true,
  defaults: true,
  enums: String,
});
const loaded = loadPackageDefinition(packageDefinition);
const testing = (loaded.grpc as GrpcObject).testing as GrpcObject;
const conformance = (loaded.meshlet as GrpcObject).conformance as GrpcObject;

const TestServiceCtor = testing.TestService as ServiceClientConstructor;
const UnimplementedServiceCtor = testing.UnimplementedService as ServiceClientConstructor;
const IdempotentServiceCtor = conformance.IdempotentService as ServiceClientConstructor;

export const TestService = TestServiceCtor as unknown as ClientCtor<TestServiceClient>;
export const UnimplementedService =
  UnimplementedServiceCtor as unknown as ClientCtor<UnimplementedServiceClient>;
export const IdempotentService = IdempotentServiceCtor as unknown as ClientCtor<IdempotentServiceClient>;

export const testServiceDefinition: ServiceDefinition = TestServiceCtor.service;
export const idempotentServiceDefinition: ServiceDefinition = IdempotentServiceCtor.service;

/** `size` zero bytes (interop payloads are zeros). */
export function zeros(size: number): Buffer {
  return Buffer.alloc(size);
}

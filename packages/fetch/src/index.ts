export { type ConnectOptionsProvider, MeshDispatcher, type MeshDispatcherOptions } from './dispatcher.js';
export { classifyError } from './errors.js';
export { createMeshFetch, type MeshFetch } from './fetch.js';
export { type LegacyHandler, rawHeader, toLegacyHandler } from './handler.js';
export { type RequestHook, type RequestObserver, type RequestStartInfo, readHeader } from './hook.js';
export { type UndiciGlobal, type UndiciTransport, undiciGlobal, undiciTransport } from './undici.js';

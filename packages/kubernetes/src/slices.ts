import { isIP } from 'node:net';
import { type Endpoint, type HealthStatus, isPlainObject, isValidHost, type Locality } from '@meshlet/core';

/** One EndpointSlice port. `name` is '' for the unnamed port of a single-port Service. */
export interface SlicePort {
  readonly name: string;
  readonly port: number | undefined;
  readonly protocol: string;
}

/** One endpoint of a slice, reduced to what routing needs. */
export interface SliceEndpoint {
  /** The first address (Kubernetes: addresses are fungible; consumers may use the first). */
  readonly address: string;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  readonly zone: string;
  readonly region: string;
  readonly nodeName: string | undefined;
  readonly hostname: string | undefined;
  /** `hints.forZones` names, or undefined when the endpoint has no hints. */
  readonly forZones: readonly string[] | undefined;
  readonly podName: string | undefined;
  readonly podNamespace: string | undefined;
  readonly podUid: string | undefined;
}

/** A parsed EndpointSlice (discovery.k8s.io/v1, or v1beta1 with its `topology` map). */
export interface ParsedSlice {
  readonly name: string;
  readonly resourceVersion: string | undefined;
  readonly addressType: string;
  readonly ports: readonly SlicePort[];
  readonly endpoints: readonly SliceEndpoint[];
  /**
   * Entries dropped because they are not valid (`ports[0].port: -5 is not a port number (1-65535)`,
   * `endpoints[2].addresses[0]: "not-an-ip" is not an IPv4 address`): they never reach a pool.
   */
  readonly problems: readonly string[];
}

/** Why `address` is not valid for a slice of `addressType`, or undefined when it is. */
function badAddress(address: string, addressType: string): string | undefined {
  if (addressType === 'IPv4') return isIP(address) === 4 ? undefined : 'an IPv4 address';
  if (addressType === 'IPv6') return isIP(address) === 6 ? undefined : 'an IPv6 address';
  if (addressType === 'FQDN') return isIP(address) === 0 && isValidHost(address) ? undefined : 'a host name';
  return undefined; // other address types are skipped whole by sliceEndpoints
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

const ZONE_LABEL = 'topology.kubernetes.io/zone';
const REGION_LABEL = 'topology.kubernetes.io/region';
const LEGACY_ZONE_LABEL = 'failure-domain.beta.kubernetes.io/zone';
const LEGACY_REGION_LABEL = 'failure-domain.beta.kubernetes.io/region';

/** Parses an EndpointSlice object; returns undefined when it is not one (no name). */
export function parseSlice(obj: unknown): ParsedSlice | undefined {
  if (!isPlainObject(obj) || !isPlainObject(obj.metadata)) return undefined;
  const name = str(obj.metadata.name);
  if (name === undefined) return undefined;
  const addressType = str(obj.addressType) ?? 'IPv4';
  const problems: string[] = [];
  const ports: SlicePort[] = [];
  if (Array.isArray(obj.ports)) {
    obj.ports.forEach((p: unknown, i: number) => {
      if (!isPlainObject(p)) return;
      // An absent port means "all ports" (Kubernetes); a present one must be a port number.
      if (p.port !== undefined && p.port !== null && !validPort(p.port)) {
        problems.push(`ports[${i}].port: ${JSON.stringify(p.port)} is not a port number (1-65535)`);
        return;
      }
      ports.push({
        name: typeof p.name === 'string' ? p.name : '',
        port: typeof p.port === 'number' ? p.port : undefined,
        protocol: str(p.protocol) ?? 'TCP',
      });
    });
  }
  const endpoints: SliceEndpoint[] = [];
  if (Array.isArray(obj.endpoints)) {
    for (let i = 0; i < obj.endpoints.length; i++) {
      const e: unknown = obj.endpoints[i];
      if (!isPlainObject(e) || !Array.isArray(e.addresses)) continue;
      const address = str(e.addresses[0]);
      if (address === undefined) continue;
      const bad = badAddress(address, addressType);
      if (bad !== undefined) {
        problems.push(`endpoints[${i}].addresses[0]: ${JSON.stringify(address)} is not ${bad}`);
        continue;
      }
      const c = isPlainObject(e.conditions) ? e.conditions : {};
      // Kubernetes: an absent `ready` means ready; an absent `serving` means "same as ready".
      const ready = c.ready !== false;
      const serving = typeof c.serving === 'boolean' ? c.serving : ready;
      const topology = isPlainObject(e.topology)
        ? e.topology
        : isPlainObject(e.deprecatedTopology)
          ? e.deprecatedTopology
          : {};
      const zone = str(e.zone) ?? str(topology[ZONE_LABEL]) ?? str(topology[LEGACY_ZONE_LABEL]) ?? '';
      const region = str(topology[REGION_LABEL]) ?? str(topology[LEGACY_REGION_LABEL]) ?? '';
      let forZones: string[] | undefined;
      if (isPlainObject(e.hints) && Array.isArray(e.hints.forZones)) {
        forZones = [];
        for (const z of e.hints.forZones)
          if (isPlainObject(z) && typeof z.name === 'string') forZones.push(z.name);
      }
      const ref = isPlainObject(e.targetRef) ? e.targetRef : undefined;
      const isPod = ref !== undefined && (ref.kind === undefined || ref.kind === 'Pod');
      endpoints.push({
        address,
        ready,
        serving,
        terminating: c.terminating === true,
        zone,
        region,
        nodeName: str(e.nodeName) ?? str(topology['kubernetes.io/hostname']),
        hostname: str(e.hostname),
        forZones,
        podName: isPod ? str(ref?.name) : undefined,
        podNamespace: isPod ? str(ref?.namespace) : undefined,
        podUid: isPod ? str(ref?.uid) : undefined,
      });
    }
  }
  return Object.freeze({
    name,
    resourceVersion: str(obj.metadata.resourceVersion),
    addressType,
    ports,
    endpoints,
    problems,
  });
}

function validPort(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;
}

/** Metadata key carrying an endpoint's `hints.forZones`, comma-separated. */
export const HINTS_KEY = 'kubernetes.io/hints-for-zones';

const localities = new Map<string, Locality>();

/** Localities are shared between endpoints (a 10,000-endpoint update allocates a handful). */
function localityOf(region: string, zone: string): Locality {
  const key = `${region}/${zone}`;
  let l = localities.get(key);
  if (l === undefined) {
    l = Object.freeze({ region, zone, subZone: '' });
    if (localities.size < 10_000) localities.set(key, l);
  }
  return l;
}

/**
 * The endpoints of one slice for one slice port (by name, or a fixed port number); empty when the
 * slice lacks the port. Built directly in the shape `makeEndpoint` gives, without its copies.
 */
export function sliceEndpoints(slice: ParsedSlice, portName: string, fixedPort?: number): Endpoint[] {
  let port = fixedPort;
  if (port === undefined) {
    for (const p of slice.ports) {
      if (p.name === portName && p.protocol === 'TCP') {
        port = p.port;
        break;
      }
    }
  }
  if (port === undefined) return [];
  if (slice.addressType !== 'IPv4' && slice.addressType !== 'IPv6' && slice.addressType !== 'FQDN') return [];
  const out: Endpoint[] = [];
  const v6 = slice.addressType === 'IPv6';
  const fqdn = slice.addressType === 'FQDN';
  for (const e of slice.endpoints) {
    if (!e.ready && !e.serving) continue;
    const health: HealthStatus = e.ready ? 'healthy' : 'draining';
    const metadata: Record<string, string> = { slice: slice.name };
    if (e.podName !== undefined) metadata.pod = e.podName;
    if (e.podNamespace !== undefined) metadata.namespace = e.podNamespace;
    if (e.podUid !== undefined) metadata.podUid = e.podUid;
    if (e.nodeName !== undefined) metadata.node = e.nodeName;
    if (e.terminating) metadata.terminating = 'true';
    if (e.forZones !== undefined) metadata[HINTS_KEY] = e.forZones.join(',');
    out.push(
      Object.freeze({
        id: v6 ? `[${e.address}]:${port}` : `${e.address}:${port}`,
        address: e.address,
        port,
        weight: 1,
        locality: localityOf(e.region, e.zone),
        priority: 0,
        health,
        metadata: Object.freeze(metadata),
        hostname: fqdn ? e.address : undefined,
        name: e.podName ?? e.hostname,
      }),
    );
  }
  return out;
}

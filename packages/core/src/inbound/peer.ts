import { isIP } from 'node:net';
import type { InboundConnection, InboundConnectionState } from './listener.js';

/** The parts of a verified peer certificate authorization reads, as Node renders them. */
export interface PeerCertificateInfo {
  /** `DNS:a, URI:spiffe://…` (entries with `, ` in them JSON-quoted). */
  readonly subjectaltname?: string | undefined;
  /** The subject's attributes (`{ CN, O, … }`; repeated ones as arrays). */
  readonly subject?: Readonly<Record<string, string | readonly string[] | undefined>> | undefined;
}

/** What the connection tells about the peer of an inbound request. */
export interface InboundPeer {
  /** The connection peer's IP. */
  readonly remoteAddress: string | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  /** The SPIFFE ID of the peer's verified client certificate; undefined for plaintext or none. */
  readonly principal: string | undefined;
  /** The connection is TLS and the peer's certificate verified against the trust bundle. */
  readonly mtls: boolean;
  /** The TLS server name the client sent. */
  readonly sni: string | undefined;
  /** The connection peer's port. */
  readonly remotePort?: number | undefined;
  /** The connection is TLS (with or without a client certificate). Default: `mtls`. */
  readonly tls?: boolean | undefined;
  /** The verified client certificate (for RBAC's `authenticated` names), if any. */
  readonly certificate?: PeerCertificateInfo | undefined;
  /**
   * The address the server listens on, as bound (`0.0.0.0`, `::`, `10.0.0.7`): it names the
   * server's inbound listener (gRFC A36). Default: `localAddress`.
   */
  readonly listenHost?: string | undefined;
  readonly listenPort?: number | undefined;
  /**
   * The connection's inbound listener state, when the server chose its filter chain at accept time
   * (meshlet's gRPC server and HTTP server factory); else the admission step finds it.
   */
  readonly inbound?: InboundConnectionState | undefined;
}

/** The parts of a `net.Socket` / `tls.TLSSocket` the peer is read from. */
export interface PeerSocket {
  readonly remoteAddress?: string | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
  readonly encrypted?: boolean;
  readonly authorized?: boolean;
  readonly remotePort?: number | undefined;
  readonly servername?: string | false | null | undefined;
  /** The TCP socket a TLS socket wraps (Node's `TLSSocket._parent`). */
  readonly _parent?: object | null | undefined;
  /** The server that accepted the connection (Node sets it): its address is the listening address. */
  readonly server?: { address(): unknown } | null | undefined;
  getPeerCertificate?(detailed?: boolean): PeerCertificateInfo | null | undefined;
}

const states = new WeakMap<object, InboundConnectionState>();

/**
 * Records the inbound listener state a server chose for `socket` when it accepted it (meshlet's
 * gRPC server and HTTP server factory), for `socketPeer` to carry.
 */
export function setConnectionState(socket: object, state: InboundConnectionState): void {
  states.set(socket, state);
}

/** The inbound listener state recorded for `socket`, if any. */
export function connectionStateOf(socket: object): InboundConnectionState | undefined {
  return states.get(socket);
}

function listenAddressOf(socket: PeerSocket): { host: string; port: number } | undefined {
  const server = socket.server;
  if (server === null || server === undefined || typeof server.address !== 'function') return undefined;
  const a = server.address() as { address?: unknown; port?: unknown } | string | null;
  if (a === null || typeof a !== 'object' || typeof a.address !== 'string' || typeof a.port !== 'number')
    return undefined;
  return { host: a.address, port: a.port };
}

/**
 * The SPIFFE ID in a certificate's subject alternative names as Node renders them
 * (`subjectaltname`: `DNS:x, URI:spiffe://td/ns/a/sa/b`; entries joined with `, `, a value holding
 * a comma, a quote or a backslash JSON-quoted with its commas escaped): the one `spiffe://` URI
 * SAN. Entries are read one after the other, so text inside another entry's value (a URI SAN
 * `x URI:spiffe://td/ns/a/sa/admin`) is never taken for an entry; a certificate with two or more
 * `spiffe://` URI SANs is not an X.509-SVID and has no SPIFFE ID (undefined).
 */
export function spiffeIdFromSubjectAltName(san: string | undefined): string | undefined {
  if (!san) return undefined;
  let id: string | undefined;
  let i = 0;
  const len = san.length;
  while (i < len) {
    const colon = san.indexOf(':', i);
    if (colon < 0) break;
    let end: number;
    let value: string | undefined;
    const uri = colon === i + 3 && san.startsWith('URI', i);
    if (san.charCodeAt(colon + 1) === 34) {
      // a JSON string: up to its closing quote (escapes skipped)
      let j = colon + 2;
      while (j < len && san.charCodeAt(j) !== 34) j += san.charCodeAt(j) === 92 ? 2 : 1;
      if (uri) {
        try {
          value = JSON.parse(san.slice(i + 4, j + 1)) as string;
        } catch {
          value = undefined;
        }
      }
      end = san.indexOf(', ', j);
    } else {
      end = san.indexOf(', ', i);
      if (uri) value = end < 0 ? san.slice(i + 4) : san.slice(i + 4, end);
    }
    if (value?.startsWith('spiffe://')) {
      if (id !== undefined) return undefined;
      id = value;
    }
    if (end < 0) break;
    i = end + 2;
  }
  return id;
}

const peers = new WeakMap<object, InboundPeer>();

/**
 * The peer of a connection (cached per socket: a request reads one WeakMap entry). The SPIFFE ID
 * is taken only from a certificate the TLS layer verified (`authorized`), never from headers.
 */
export function socketPeer(socket: PeerSocket): InboundPeer {
  let p = peers.get(socket);
  if (p !== undefined) return p;
  let principal: string | undefined;
  let certificate: PeerCertificateInfo | undefined;
  const mtls = socket.encrypted === true && socket.authorized === true;
  if (mtls && typeof socket.getPeerCertificate === 'function') {
    certificate = socket.getPeerCertificate() ?? undefined;
    principal = spiffeIdFromSubjectAltName(certificate?.subjectaltname);
  }
  const sn = socket.encrypted === true ? socket.servername : undefined;
  const listen = listenAddressOf(socket);
  p = Object.freeze({
    remoteAddress: socket.remoteAddress,
    localAddress: socket.localAddress,
    localPort: socket.localPort,
    principal,
    mtls,
    sni: typeof sn === 'string' ? sn : undefined,
    remotePort: socket.remotePort,
    tls: socket.encrypted === true,
    certificate,
    listenHost: listen?.host,
    listenPort: listen?.port,
    inbound:
      states.get(socket) ??
      (socket._parent !== null && socket._parent !== undefined ? states.get(socket._parent) : undefined),
  });
  // Before the connection is fully set up its addresses may be unknown: cache only a complete peer.
  if (p.remoteAddress !== undefined) peers.set(socket, p);
  return p;
}

/** `::ffff:10.0.0.1` → `10.0.0.1` (IPv4-mapped IPv6 peers match IPv4 blocks). */
export function unmapIp(ip: string): string {
  return ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip;
}

/** An IPv4 address as an unsigned 32-bit number, or -1 when `s` is not one (dotted quad). */
function parseIpv4(s: string): number {
  let n = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || ++dots > 3) return -1;
      n = n * 256 + part;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      part = part * 10 + (c - 48);
      if (++digits > 3 || part > 255) return -1;
    } else return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return n * 256 + part;
}

/**
 * Parses an IPv6 address (`::` and a dotted IPv4 tail allowed, a `%zone` ignored) into `out` (8
 * groups of 16 bits). False when `s` is not one.
 */
function parseIpv6(s: string, out: Uint16Array): boolean {
  let end = s.indexOf('%');
  if (end < 0) end = s.length;
  let groups = 0;
  let gapAt = -1;
  let i = 0;
  if (s.charCodeAt(0) === 58) {
    if (s.charCodeAt(1) !== 58) return false;
    gapAt = 0;
    i = 2;
    if (i === end) {
      out.fill(0);
      return true;
    }
  }
  while (i < end) {
    // a dotted IPv4 tail takes the last two groups
    const nextColon = s.indexOf(':', i);
    const stop = nextColon < 0 || nextColon > end ? end : nextColon;
    if (stop === end && s.indexOf('.', i) >= 0 && s.indexOf('.', i) < end) {
      const v4 = parseIpv4(s.slice(i, end));
      if (v4 < 0 || groups > 6) return false;
      out[groups++] = Math.floor(v4 / 65536);
      out[groups++] = v4 % 65536;
      i = end;
      break;
    }
    let v = 0;
    let digits = 0;
    for (; i < stop; i++) {
      const h = s.charCodeAt(i);
      const d = h >= 48 && h <= 57 ? h - 48 : (h | 0x20) >= 97 && (h | 0x20) <= 102 ? (h | 0x20) - 87 : -1;
      if (d < 0 || ++digits > 4) return false;
      v = v * 16 + d;
    }
    if (digits === 0 || groups >= 8) return false;
    out[groups++] = v;
    if (i === end) break;
    i++; // the ':'
    if (s.charCodeAt(i) === 58) {
      if (gapAt >= 0) return false;
      gapAt = groups;
      i++;
    } else if (i === end) return false;
  }
  if (gapAt < 0) return groups === 8;
  if (groups > 7) return false;
  // move the groups after the gap to the end, zeros in between
  const tail = groups - gapAt;
  for (let k = 0; k < tail; k++) out[7 - k] = out[groups - 1 - k] as number;
  for (let k = gapAt; k < 8 - tail; k++) out[k] = 0;
  return true;
}

/**
 * A matcher for a list of CIDR blocks / addresses, IPv4 and IPv6 (IPv4-mapped IPv6 peers match
 * IPv4 blocks); invalid IPs never match. Our own rather than `net.BlockList`, whose `check()`
 * builds a `SocketAddress` per call: ~1 µs on every request it guards (measured in the servers
 * benchmark's profile), where comparing parsed numbers costs a few tens of nanoseconds.
 */
export function networkMatcher(blocks: readonly string[]): (ip: string | undefined) => boolean {
  if (blocks.length === 0) return () => false;
  const v4Nets: number[] = [];
  const v4Masks: number[] = [];
  const v6Nets: Uint16Array[] = [];
  const v6Bits: number[] = [];
  for (const b of blocks) {
    const slash = b.indexOf('/');
    const addr = slash < 0 ? b : b.slice(0, slash);
    const a4 = parseIpv4(addr);
    if (a4 >= 0) {
      const bits = slash < 0 ? 32 : Number(b.slice(slash + 1));
      v4Nets.push(a4 | 0);
      v4Masks.push(bits === 0 ? 0 : ~0 << (32 - bits));
      continue;
    }
    const a6 = new Uint16Array(8);
    if (parseIpv6(addr, a6)) {
      v6Nets.push(a6);
      v6Bits.push(slash < 0 ? 128 : Number(b.slice(slash + 1)));
    }
  }
  const scratch = new Uint16Array(8);
  return (ip) => {
    if (!ip) return false;
    let a4 = parseIpv4(ip);
    if (a4 < 0 && ip.length > 7 && ip.charCodeAt(0) === 58 && ip.startsWith('::ffff:'))
      a4 = parseIpv4(ip.slice(7));
    if (a4 >= 0) {
      const x = a4 | 0;
      for (let i = 0; i < v4Nets.length; i++) {
        if (((x ^ (v4Nets[i] as number)) & (v4Masks[i] as number)) === 0) return true;
      }
      return false;
    }
    if (v6Nets.length === 0 || !parseIpv6(ip, scratch)) return false;
    for (let n = 0; n < v6Nets.length; n++) {
      const net = v6Nets[n] as Uint16Array;
      let left = v6Bits[n] as number;
      let ok = true;
      for (let g = 0; g < 8 && left > 0; g++, left -= 16) {
        const shift = left >= 16 ? 0 : 16 - left;
        if ((scratch[g] as number) >> shift !== (net[g] as number) >> shift) {
          ok = false;
          break;
        }
      }
      if (ok) return true;
    }
    return false;
  };
}

/**
 * The client IP from `X-Forwarded-For` given the number of trusted proxies in front of this
 * service (Istio's `numTrustedProxies`, Envoy's `xff_num_trusted_hops`): each trusted proxy
 * appended the address it received from, so the client is the Nth entry from the right. Entries to
 * its left were written by whoever sent the request and are never used. Undefined when `hops` is
 * 0, the header has fewer entries, or the entry is not an IP address (use the connection peer).
 */
export function forwardedClientIp(
  header: string | readonly string[] | undefined,
  hops: number,
): string | undefined {
  if (hops <= 0 || header === undefined) return undefined;
  // Node joins repeated X-Forwarded-For fields with ", "; an array is joined the same way.
  const xff = typeof header === 'string' ? header : header.join(',');
  let end = xff.length;
  for (let n = 1; end > 0; n++) {
    const comma = xff.lastIndexOf(',', end - 1);
    if (n === hops) {
      const entry = xff.slice(comma + 1, end).trim();
      return isIP(entry) !== 0 ? entry : undefined;
    }
    if (comma < 0) return undefined;
    end = comma;
  }
  return undefined;
}

/**
 * How a socket arrived, for filter chain matching: its local and remote addresses (IPv4-mapped
 * ones as IPv4) and ports, and the transport a server that owns its sockets told apart.
 */
export function socketConnection(
  socket: {
    localAddress?: string | undefined;
    localPort?: number | undefined;
    remoteAddress?: string | undefined;
    remotePort?: number | undefined;
  },
  transport: 'tls' | 'raw_buffer',
): InboundConnection {
  return {
    localAddress: socket.localAddress === undefined ? undefined : unmapIp(socket.localAddress),
    localPort: socket.localPort,
    remoteAddress: socket.remoteAddress === undefined ? undefined : unmapIp(socket.remoteAddress),
    remotePort: socket.remotePort,
    transport,
  };
}

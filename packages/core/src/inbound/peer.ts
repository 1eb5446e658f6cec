import { BlockList, isIP } from 'node:net';

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
}

/** The parts of a `net.Socket` / `tls.TLSSocket` the peer is read from. */
export interface PeerSocket {
  readonly remoteAddress?: string | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
  readonly encrypted?: boolean;
  readonly authorized?: boolean;
  readonly servername?: string | false | null | undefined;
  getPeerCertificate?(detailed?: boolean): { subjectaltname?: string | undefined } | null | undefined;
}

/**
 * The SPIFFE ID in a certificate's subject alternative names as Node renders them
 * (`subjectaltname`: `DNS:x, URI:spiffe://td/ns/a/sa/b`; an entry with `, ` in it is JSON-quoted).
 */
export function spiffeIdFromSubjectAltName(san: string | undefined): string | undefined {
  if (!san) return undefined;
  let i = san.indexOf('URI:');
  while (i >= 0) {
    if (i === 0 || san.charCodeAt(i - 1) === 32) {
      let v: string;
      if (san.charCodeAt(i + 4) === 34) {
        const close = san.indexOf('", ', i + 5);
        const raw = close < 0 ? san.slice(i + 4) : san.slice(i + 4, close + 1);
        try {
          v = JSON.parse(raw) as string;
        } catch {
          v = '';
        }
      } else {
        const end = san.indexOf(', ', i);
        v = end < 0 ? san.slice(i + 4) : san.slice(i + 4, end);
      }
      if (v.startsWith('spiffe://')) return v;
    }
    i = san.indexOf('URI:', i + 4);
  }
  return undefined;
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
  const mtls = socket.encrypted === true && socket.authorized === true;
  if (mtls && typeof socket.getPeerCertificate === 'function') {
    principal = spiffeIdFromSubjectAltName(socket.getPeerCertificate()?.subjectaltname);
  }
  const sn = socket.encrypted === true ? socket.servername : undefined;
  p = Object.freeze({
    remoteAddress: socket.remoteAddress,
    localAddress: socket.localAddress,
    localPort: socket.localPort,
    principal,
    mtls,
    sni: typeof sn === 'string' ? sn : undefined,
  });
  // Before the connection is fully set up its addresses may be unknown: cache only a complete peer.
  if (p.remoteAddress !== undefined) peers.set(socket, p);
  return p;
}

/** `::ffff:10.0.0.1` → `10.0.0.1` (IPv4-mapped IPv6 peers match IPv4 blocks). */
export function unmapIp(ip: string): string {
  return ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip;
}

/** A matcher for a list of CIDR blocks / addresses (IPv4 and IPv6); invalid IPs never match. */
export function networkMatcher(blocks: readonly string[]): (ip: string | undefined) => boolean {
  if (blocks.length === 0) return () => false;
  const list = new BlockList();
  for (const b of blocks) {
    const [addr = '', bits] = b.split('/');
    const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(bits), type);
  }
  return (ip) => {
    if (!ip) return false;
    const v = unmapIp(ip);
    const fam = isIP(v);
    return fam !== 0 && list.check(v, fam === 6 ? 'ipv6' : 'ipv4');
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

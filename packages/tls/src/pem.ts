import { X509Certificate } from 'node:crypto';
import { spiffeIdFromSubjectAltName } from '@meshlet/core';

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every PEM certificate block in `text`, in order. */
export function splitPemCertificates(text: string): string[] {
  return text.match(PEM_CERT_RE) ?? [];
}

/** The URI SANs of a certificate (from Node's `subjectAltName` text, e.g. `URI:spiffe://td/x`). */
export function uriSans(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  const out: string[] = [];
  // Node joins entries with ", "; a URI containing ", " is quoted with JSON escapes.
  for (const raw of subjectAltName.split(', ')) {
    if (raw.startsWith('URI:')) {
      let v = raw.slice(4);
      if (v.startsWith('"')) {
        try {
          v = JSON.parse(v) as string;
        } catch {
          continue;
        }
      }
      out.push(v);
    }
  }
  return out;
}

/** The SPIFFE ID of a certificate: its one `spiffe://` URI SAN, or undefined. */
export function spiffeIdOf(cert: {
  subjectaltname?: string;
  subjectAltName?: string | undefined;
}): string | undefined {
  return spiffeIdFromSubjectAltName(cert.subjectaltname ?? cert.subjectAltName);
}

export interface SpiffeId {
  readonly trustDomain: string;
  readonly path: string;
}

/** Parses `spiffe://trust-domain/path` following the SPIFFE ID spec; undefined when invalid. */
export function parseSpiffeId(id: string): SpiffeId | undefined {
  if (!id.startsWith('spiffe://')) return undefined;
  const rest = id.slice(9);
  const slash = rest.indexOf('/');
  const td = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '' : rest.slice(slash);
  if (!/^[a-z0-9._-]+$/.test(td)) return undefined;
  if (path !== '' && !/^(\/[A-Za-z0-9._-]+)+$/.test(path)) return undefined;
  if (/\/\.\.?(\/|$)/.test(path)) return undefined;
  return { trustDomain: td, path };
}

/**
 * True when `actual` satisfies `expected`: an exact SPIFFE ID (`spiffe://td/ns/x/sa/y`), or a trust
 * domain (`spiffe://td`, with or without a trailing slash) matching every ID in it.
 */
export function matchesIdentity(expected: string, actual: string | undefined): boolean {
  if (actual === undefined) return false;
  const e = expected.endsWith('/') ? expected.slice(0, -1) : expected;
  const exp = parseSpiffeId(e);
  if (!exp) return false;
  if (exp.path === '') {
    const act = parseSpiffeId(actual);
    return act !== undefined && act.trustDomain === exp.trustDomain;
  }
  return actual === e;
}

/** Parses PEM text into certificates; throws on the first invalid block. */
export function parseCertificates(text: string): X509Certificate[] {
  return splitPemCertificates(text).map((pem) => new X509Certificate(pem));
}

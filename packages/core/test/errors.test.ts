import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, isMeshError, isMeshErrorCode, MeshError } from '../src/index.js';

describe('error catalogue', () => {
  it('documents every code in docs/errors.md', () => {
    const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
    const missing = Object.values(ErrorCodes).filter((code) => !doc.includes(`\`${code}\``));
    expect(missing).toEqual([]);
  });

  it('codes are unique and prefixed', () => {
    const codes = Object.values(ErrorCodes);
    expect(new Set(codes).size).toBe(codes.length);
    for (const c of codes) expect(c).toMatch(/^MESHLET_ERR_[A-Z_]+$/);
  });

  it('guards recognise errors from another copy of the library', () => {
    const ours = new MeshError(ErrorCodes.TIMEOUT, 'x', { service: 's', endpoint: 'e' });
    // A structurally identical error created by a duplicate install carries the same global brand.
    const foreign = Object.assign(new Error('y'), { code: ErrorCodes.TIMEOUT });
    Object.defineProperty(foreign, Symbol.for('meshlet.error'), { value: true });
    expect(isMeshError(ours)).toBe(true);
    expect(isMeshErrorCode(foreign, ErrorCodes.TIMEOUT)).toBe(true);
    expect(isMeshError(new Error('plain'))).toBe(false);
    expect(isMeshError(null)).toBe(false);
    expect(ours.toJSON()).toMatchObject({ code: 'MESHLET_ERR_TIMEOUT', service: 's', endpoint: 'e' });
  });
});

/**
 * The `meshlet` grpc-js balancer on a fake channel helper: what it asks of its subchannels.
 */
import { connectivityState, type experimental } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { MeshLbConfig, MeshLoadBalancer, RUNTIME_ATTRIBUTE } from '../src/balancer.js';
import { meshFor } from './helpers.js';

type Listener = (
  sub: experimental.SubchannelInterface,
  prev: connectivityState,
  next: connectivityState,
  keepalive: number,
) => void;

/** A subchannel that only records what the balancer asks of it; its state is the test's. */
class FakeSubchannel {
  state = connectivityState.IDLE;
  connects = 0;
  readonly listeners = new Set<Listener>();
  constructor(readonly address: string) {}
  getConnectivityState() {
    return this.state;
  }
  startConnecting() {
    this.connects++;
  }
  addConnectivityStateListener(l: Listener) {
    this.listeners.add(l);
  }
  removeConnectivityStateListener(l: Listener) {
    this.listeners.delete(l);
  }
  ref() {}
  unref() {}
  realSubchannelEquals(other: unknown) {
    return other === this;
  }
  /** The subchannel moves to `next` and says so. */
  move(next: connectivityState) {
    const prev = this.state;
    this.state = next;
    for (const l of this.listeners) l(this as unknown as experimental.SubchannelInterface, prev, next, -1);
  }
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('meshlet balancer: idle subchannels', () => {
  it('exitIdle (called by grpc-js at every call) asks exactly the IDLE subchannels to connect', async () => {
    const m = await meshFor({ svc: { endpoints: ['127.0.0.1:1', '127.0.0.1:2'] } });
    cleanups.push(() => m.close());
    const rt = m.service('svc');
    if (rt === undefined) throw new Error('no runtime');
    const subs: FakeSubchannel[] = [];
    const helper = {
      createSubchannel(addr: { host: string; port: number }) {
        const s = new FakeSubchannel(`${addr.host}:${addr.port}`);
        subs.push(s);
        return s;
      },
      updateState() {},
      requestReresolution() {},
      addChannelzChild() {},
      removeChannelzChild() {},
    } as unknown as experimental.ChannelControlHelper;
    const lb = new MeshLoadBalancer(helper);
    cleanups.push(() => lb.destroy());
    lb.updateAddressList(
      {
        ok: true,
        value: rt.endpoints.map((st) => ({
          addresses: [{ host: st.endpoint.address, port: st.endpoint.port }],
        })),
      },
      new MeshLbConfig(),
      { [RUNTIME_ATTRIBUTE]: rt } as never,
    );
    const [a, b] = subs as [FakeSubchannel, FakeSubchannel];
    // Each is asked to connect when created.
    expect([a.connects, b.connects]).toEqual([1, 1]);
    // Both still IDLE: each call's exitIdle asks again.
    lb.exitIdle();
    expect([a.connects, b.connects]).toEqual([2, 2]);
    a.move(connectivityState.CONNECTING);
    b.move(connectivityState.READY);
    for (let i = 0; i < 3; i++) lb.exitIdle();
    expect([a.connects, b.connects]).toEqual([2, 2]);
    // A connection that went IDLE is asked to connect at once, and by the calls' exitIdle until it does.
    b.move(connectivityState.IDLE);
    expect(b.connects).toBe(3);
    lb.exitIdle();
    lb.exitIdle();
    expect([a.connects, b.connects]).toEqual([2, 5]);
    b.move(connectivityState.CONNECTING);
    lb.exitIdle();
    lb.exitIdle();
    expect([a.connects, b.connects]).toEqual([2, 5]);
  });
});

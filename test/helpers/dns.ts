import { createSocket, type Socket } from 'node:dgram';
import type { AddressInfo } from 'node:net';
import dnsPacket from 'dns-packet';

export interface DnsRecords {
  A?: Record<string, string[]>;
  AAAA?: Record<string, string[]>;
  SRV?: Record<string, Array<{ target: string; port: number; priority?: number; weight?: number }>>;
}

export interface FakeDnsServer {
  /** `127.0.0.1:port`, for `Resolver.setServers`. */
  readonly address: string;
  /** The zone served; mutate it to change answers. */
  records: DnsRecords;
  /** Answer SERVFAIL to everything while true. */
  failing: boolean;
  /** TTL of every answer, in seconds. */
  ttl: number;
  queries: number;
  close(): Promise<void>;
}

/** A real DNS server over UDP on 127.0.0.1 (port 0) answering from an in-memory zone. */
export async function startDnsServer(records: DnsRecords): Promise<FakeDnsServer> {
  const socket: Socket = createSocket('udp4');
  const state: FakeDnsServer = {
    address: '',
    records,
    failing: false,
    ttl: 30,
    queries: 0,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
  socket.on('message', (msg, rinfo) => {
    state.queries++;
    const query = dnsPacket.decode(msg);
    const q = query.questions?.[0];
    const answers: dnsPacket.Answer[] = [];
    let rcode: 'NOERROR' | 'NXDOMAIN' | 'SERVFAIL' = 'NOERROR';
    if (state.failing) {
      rcode = 'SERVFAIL';
    } else if (q) {
      const name = q.name;
      const known = [state.records.A, state.records.AAAA, state.records.SRV].some((z) => z && name in z);
      if (!known) rcode = 'NXDOMAIN';
      if (q.type === 'A')
        for (const ip of state.records.A?.[name] ?? [])
          answers.push({ type: 'A', name, ttl: state.ttl, data: ip });
      if (q.type === 'AAAA')
        for (const ip of state.records.AAAA?.[name] ?? [])
          answers.push({ type: 'AAAA', name, ttl: state.ttl, data: ip });
      if (q.type === 'SRV') {
        for (const r of state.records.SRV?.[name] ?? []) {
          answers.push({
            type: 'SRV',
            name,
            ttl: state.ttl,
            data: { target: r.target, port: r.port, priority: r.priority ?? 0, weight: r.weight ?? 1 },
          });
        }
      }
    }
    const flags = (rcode === 'SERVFAIL' ? 2 : rcode === 'NXDOMAIN' ? 3 : 0) | dnsPacket.AUTHORITATIVE_ANSWER;
    const response = dnsPacket.encode({
      type: 'response',
      id: query.id,
      flags,
      questions: query.questions,
      answers,
    });
    socket.send(response, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address() as AddressInfo;
  (state as { address: string }).address = `127.0.0.1:${port}`;
  return state;
}

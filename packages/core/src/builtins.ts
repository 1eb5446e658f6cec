import { registerMeshSection, registerServiceSection, setDefaultLoadBalancer } from './config.js';
import { dnsDiscovery } from './discovery/dns.js';
import { fileDiscovery } from './discovery/file.js';
import { staticDiscovery } from './discovery/static.js';
import { httpHealthChecker } from './health/http.js';
import { tcpHealthChecker } from './health/tcp.js';
import { registerHealthChecker } from './health/types.js';
import { inboundSchema, parseInboundSection } from './inbound/config.js';
import { clientSideWeightedRoundRobin } from './lb/client-side-wrr.js';
import { leastRequest } from './lb/least-request.js';
import { maglev } from './lb/maglev.js';
import { peakEwma } from './lb/peak-ewma.js';
import { balancingSchema, parseBalancing } from './lb/priority.js';
import { random } from './lb/random.js';
import { ringHash } from './lb/ring-hash.js';
import { roundRobin } from './lb/round-robin.js';
import { weightedRoundRobin } from './lb/weighted-round-robin.js';
import { registerDiscovery, registerLoadBalancer } from './registry.js';

/** Registers the built-in policies and sources, exactly as a third party would register its own. */
export function registerBuiltins(): void {
  registerLoadBalancer(roundRobin);
  registerLoadBalancer(leastRequest);
  registerLoadBalancer(weightedRoundRobin);
  registerLoadBalancer(random);
  registerLoadBalancer(peakEwma);
  registerLoadBalancer(ringHash);
  registerLoadBalancer(maglev);
  registerLoadBalancer(clientSideWeightedRoundRobin);
  // Linkerd's and Finagle's default: latency-aware P2C. Services that name no `lb` get it.
  setDefaultLoadBalancer('peak_ewma');
  registerServiceSection({
    name: 'balancing',
    schema: balancingSchema,
    parse: (raw, path, issues) => parseBalancing(raw, path, issues),
  });
  registerDiscovery(staticDiscovery);
  registerHealthChecker(httpHealthChecker);
  registerHealthChecker(tcpHealthChecker);
  registerDiscovery(fileDiscovery);
  registerDiscovery(dnsDiscovery);
  // How Express, Fastify and gRPC servers admit requests (path normalization, deadlines, XFF).
  registerMeshSection({
    name: 'inbound',
    schema: inboundSchema,
    parse: (raw, path, issues) => parseInboundSection(raw, path, issues),
  });
}

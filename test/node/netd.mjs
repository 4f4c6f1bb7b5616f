// The two network services a one-node test cluster without kube-proxy and CoreDNS needs, so that pods
// on the node's bridge behave as on a real cluster (run by test/node/node.ts as its own process, so a
// busy test process never stalls the pods' API traffic):
//
//  * API relay: listens on the `kubernetes` Service's cluster IP (10.0.0.1:443, an address node.ts puts
//    on the host side of the pod bridge) and relays TCP to the loopback kube-apiserver. In-cluster
//    clients dial KUBERNETES_SERVICE_HOST:PORT as the kubelet sets them; TLS is end to end (the
//    apiserver's certificate carries 10.0.0.1).
//  * DNS: answers A queries for <service>.<namespace>.svc.<domain> with the Service's READY endpoint
//    addresses (from its EndpointSlices), i.e. like a headless Service; nothing is ever forwarded off
//    this machine (every other name is NXDOMAIN). This is a stand-in for CoreDNS + kube-proxy, which
//    would answer with the cluster IP and then DNAT it to the same endpoints.
//
// Usage: node netd.mjs --relay 10.0.0.1:443=127.0.0.1:6443 --dns 10.213.0.1:53 --api https://127.0.0.1:6443
//                      --ca ca.crt --cert admin.crt --key admin.key [--domain cluster.local]
// Prints "ready" on stdout once listening; a line per DNS answer on stderr; SIGTERM stops it.
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { connect, createServer } from 'node:net';

const args = new Map();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
for (const k of ['relay', 'dns', 'api', 'ca', 'cert', 'key']) {
  if (!args.get(k)) {
    console.error(`netd: --${k} is required`);
    process.exit(2);
  }
}
const domain = args.get('domain') ?? 'cluster.local';
const tls = { ca: readFileSync(args.get('ca')), cert: readFileSync(args.get('cert')), key: readFileSync(args.get('key')) };
const hostPort = (s) => {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i), Number(s.slice(i + 1))];
};

// ---- API relay ----------------------------------------------------------------------------------
const [relayFrom, relayTo] = args.get('relay').split('=');
const [listenHost, listenPort] = hostPort(relayFrom);
const [targetHost, targetPort] = hostPort(relayTo);
const relay = createServer((down) => {
  const up = connect(targetPort, targetHost);
  const close = () => { down.destroy(); up.destroy(); };
  down.on('error', close);
  up.on('error', close);
  down.pipe(up);
  up.pipe(down);
});

// ---- DNS ----------------------------------------------------------------------------------------
function apiGet(path) {
  return new Promise((resolve, reject) => {
    const req = request(`${args.get('api')}${path}`, { ...tls, timeout: 3000, headers: { Accept: 'application/json' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** The IPv4 addresses a name resolves to, or undefined for NXDOMAIN. */
async function resolve(name) {
  const m = name.toLowerCase().match(new RegExp(`^([a-z0-9-]+)\\.([a-z0-9-]+)\\.svc\\.${domain.replace(/\./g, '\\.')}$`));
  if (!m) return undefined;
  const [, svc, ns] = m;
  const s = await apiGet(`/api/v1/namespaces/${ns}/services/${svc}`);
  if (s.status !== 200) return undefined;
  const clusterIP = JSON.parse(s.body).spec?.clusterIP;
  if (ns === 'default' && svc === 'kubernetes') return [clusterIP]; // answered by the relay
  const e = await apiGet(`/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices?labelSelector=${encodeURIComponent(`kubernetes.io/service-name=${svc}`)}`);
  if (e.status !== 200) return [];
  const ips = [];
  for (const slice of JSON.parse(e.body).items ?? []) {
    if (slice.addressType !== 'IPv4') continue;
    for (const ep of slice.endpoints ?? []) if (ep.conditions?.ready !== false) ips.push(...ep.addresses);
  }
  return ips;
}

function parseQuestion(msg) {
  const labels = [];
  let off = 12;
  while (off < msg.length && msg[off] !== 0) {
    const len = msg[off];
    if (len > 63) throw new Error('compressed question');
    labels.push(msg.subarray(off + 1, off + 1 + len).toString('ascii'));
    off += len + 1;
  }
  const end = off + 5; // zero byte + qtype + qclass
  return { name: labels.join('.'), qtype: msg.readUInt16BE(off + 1), question: msg.subarray(12, end) };
}

function answer(query, question, rcode, ips) {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(query.readUInt16BE(0), 0);
  head.writeUInt16BE(0x8180 | (query.readUInt16BE(2) & 0x0100) | rcode, 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(ips.length, 6);
  const records = ips.map((ip) => {
    const r = Buffer.alloc(16);
    r.writeUInt16BE(0xc00c, 0); // pointer to the question's name
    r.writeUInt16BE(1, 2); // A
    r.writeUInt16BE(1, 4); // IN
    r.writeUInt32BE(5, 6); // TTL
    r.writeUInt16BE(4, 10);
    ip.split('.').forEach((o, i) => r.writeUInt8(Number(o), 12 + i));
    return r;
  });
  return Buffer.concat([head, question, ...records]);
}

const dns = createSocket('udp4');
dns.on('message', (msg, rinfo) => {
  void (async () => {
    let q;
    try {
      q = parseQuestion(msg);
    } catch {
      return;
    }
    let rcode = 3;
    let ips = [];
    try {
      const found = await resolve(q.name);
      if (found) {
        rcode = 0;
        ips = q.qtype === 1 ? found.filter(Boolean) : []; // AAAA and others: no data
      }
    } catch (err) {
      rcode = 2; // SERVFAIL: the API server did not answer
      console.error(`netd: ${q.name}: ${err.message}`);
    }
    console.error(`netd: ${q.name} type ${q.qtype} → ${rcode === 0 ? ips.join(',') || '(no data)' : `rcode ${rcode}`}`);
    dns.send(answer(msg, q.question, rcode, ips), rinfo.port, rinfo.address);
  })();
});

const [dnsHost, dnsPort] = hostPort(args.get('dns'));
await new Promise((res, rej) => { relay.once('error', rej); relay.listen(listenPort, listenHost, res); });
await new Promise((res, rej) => { dns.once('error', rej); dns.bind(dnsPort, dnsHost, res); });
process.stdout.write('ready\n');
const stop = () => { relay.close(); dns.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// Never outlive the test that started it (a killed test run must not leave 10.0.0.1:443 taken).
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) stop(); }, 1000).unref();

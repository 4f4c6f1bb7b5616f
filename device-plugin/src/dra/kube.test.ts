// The client-node side of the DRA driver's ResourceClaim ports (kube.ts) against a local HTTP server
// playing the API server: the claim GET is really aborted by its signal (the prepare deadline), the
// list follows `continue` and keeps the first page's resourceVersion, the watch delivers events.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import type { ClaimEventType } from './claims.js';
import { claimReader, KubeClaimListWatch } from './kube.js';

let server: Server;
let kc: KubeConfig;
let handler: (req: IncomingMessage, res: ServerResponse) => void = () => undefined;
const closed: string[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    req.on('close', () => closed.push(req.url ?? ''));
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u', token: 't' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const json = (res: ServerResponse, code: number, body: unknown): void => {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

test('claimReader: the claim, undefined for 404, and a request its signal aborts', async () => {
  const auth: string[] = [];
  handler = (req, res) => {
    if (req.url?.endsWith('/resourceclaims/c1')) json(res, 200, { apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name: 'c1', namespace: 'vms', uid: 'u1' }, spec: { devices: {} } });
    else if (req.url?.endsWith('/resourceclaims/hung')) auth.push(req.headers.authorization ?? ''); // never answers
    else json(res, 404, { kind: 'Status', code: 404, reason: 'NotFound' });
  };
  const get = claimReader(kc);
  expect((await get('vms', 'c1'))?.metadata).toMatchObject({ name: 'c1', uid: 'u1' });
  expect(await get('vms', 'nope')).toBeUndefined();
  const ctl = new AbortController();
  const hung = get('vms', 'hung', ctl.signal);
  await new Promise((r) => setTimeout(r, 100));
  ctl.abort();
  await expect(hung).rejects.toThrow();
  for (let i = 0; i < 100 && !closed.some((u) => u.endsWith('/hung')); i++) await new Promise((r) => setTimeout(r, 10));
  expect(closed.some((u) => u.endsWith('/resourceclaims/hung'))).toBe(true); // the connection was really dropped
  expect(auth).toEqual(['Bearer t']); // the abort middleware comes on top of the credentials, not instead
});

test('KubeClaimListWatch: pages through continue, keeps the first page\'s version, watches from it', async () => {
  const seen: string[] = [];
  handler = (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    seen.push(`${url.pathname}?${url.searchParams.toString()}`);
    if (url.searchParams.get('watch') === 'true') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(`${JSON.stringify({ type: 'ADDED', object: { metadata: { name: 'c3', namespace: 'vms', uid: 'u3', resourceVersion: '8' } } })}\n`);
      res.end(`${JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '9' } } })}\n`);
      return;
    }
    const cont = url.searchParams.get('continue');
    if (!cont) json(res, 200, { kind: 'ResourceClaimList', metadata: { resourceVersion: '7', continue: 'page2' }, items: [{ metadata: { name: 'c1', namespace: 'vms', uid: 'u1' } }] });
    else json(res, 200, { kind: 'ResourceClaimList', metadata: { resourceVersion: '7' }, items: [{ metadata: { name: 'c2', namespace: 'vms', uid: 'u2' } }] });
  };
  const lw = new KubeClaimListWatch(kc);
  const l = await lw.list(new AbortController().signal);
  expect(l.resourceVersion).toBe('7');
  expect(l.items.map((c) => c.metadata.uid)).toEqual(['u1', 'u2']);
  expect(seen[0]).toBe('/apis/resource.k8s.io/v1/resourceclaims?limit=500');
  expect(seen[1]).toBe('/apis/resource.k8s.io/v1/resourceclaims?continue=page2&limit=500');
  const events: [ClaimEventType, string | undefined][] = [];
  const ended = await lw.watch('7', (t, o) => events.push([t, (o as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion]), new AbortController().signal);
  expect(ended).toBeUndefined();
  expect(events).toEqual([['ADDED', '8'], ['BOOKMARK', '9']]);
  expect(seen[2]).toMatch(/^\/apis\/resource\.k8s\.io\/v1\/resourceclaims\?.*resourceVersion=7/);
});

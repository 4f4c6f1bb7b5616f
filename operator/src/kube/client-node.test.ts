// The API adapter's request deadline, against a local HTTP server that accepts a request and never
// answers (what a chart install once met: a server-side apply to a just-created CRD that hung).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { ClientNodeKube } from './client-node.js';
import { VirtualIONodes } from './resources.js';

let server: Server;
let requests: string[] = [];

beforeAll(async () => {
  server = createServer((req) => {
    requests.push(`${req.method} ${req.url}`); // never answered
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function kubeFor(timeoutMs: number): ClientNodeKube {
  const kc = new KubeConfig();
  const { port } = server.address() as AddressInfo;
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u', token: 't' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return new ClientNodeKube(kc, timeoutMs);
}

test('a call the API server never answers fails with a retryable error instead of hanging', async () => {
  requests = [];
  const kube = kubeFor(200);
  const err = await kube.get(VirtualIONodes, 'n1').then(() => undefined, (e: unknown) => e);
  expect(requests).toEqual(['GET /apis/virtualio.dev/v1alpha1/virtualionodes/n1']);
  expect(err).toMatchObject({ kind: 'Transient' });
  expect(String((err as Error).message)).toMatch(/get virtualionodes\/n1: .*(abort|timeout)/i);
});

test('a server-side apply gets the same deadline', async () => {
  requests = [];
  const kube = kubeFor(200);
  const body = { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'n1' }, spec: { pools: [] } };
  await expect(kube.apply(VirtualIONodes, body, { fieldManager: 'virtualio-operator', force: true })).rejects.toMatchObject({ kind: 'Transient' });
  expect(requests).toHaveLength(1);
});

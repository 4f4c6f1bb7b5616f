import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig, Watch } from '@kubernetes/client-node';
import { WATCH_SECONDS_MIN, WATCH_SILENCE_LIMIT_MS, watchOnce } from './watch.js';

// A watch endpoint on loopback whose behaviour each test sets.
async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ kc: KubeConfig; server: Server; urls: string[] }> {
  const urls: string[] = [];
  const server = createServer((req, res) => {
    urls.push(req.url ?? '');
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return { kc, server, urls };
}

const line = (type: string, rv: string): string => `${JSON.stringify({ type, object: { metadata: { name: 'n', resourceVersion: rv } } })}\n`;

describe('watchOnce', () => {
  let server: Server | undefined;
  afterEach(async () => {
    const s = server;
    server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  });

  it('asks the server to end the watch itself, 60–90 s from now, and waits longer than that for a silent one', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(line('ADDED', '5'));
    });
    server = s.server;
    const seen: string[] = [];
    const ended = await watchOnce(s.kc, '/apis/x/v1/things', { resourceVersion: '4', allowWatchBookmarks: true }, (t, o) => seen.push(`${t}@${(o as { metadata: { resourceVersion: string } }).metadata.resourceVersion}`), new AbortController().signal);
    expect(ended).toBeUndefined(); // the server's end is a normal end, not an error
    expect(seen).toEqual(['ADDED@5']);
    const q = new URL(s.urls[0] ?? '', 'http://x').searchParams;
    expect(q.get('resourceVersion')).toBe('4');
    expect(q.get('allowWatchBookmarks')).toBe('true');
    const t = Number(q.get('timeoutSeconds'));
    expect(t).toBeGreaterThanOrEqual(WATCH_SECONDS_MIN);
    expect(t).toBeLessThan(WATCH_SECONDS_MIN + 30);
    expect(WATCH_SILENCE_LIMIT_MS).toBeGreaterThan((WATCH_SECONDS_MIN + 30) * 1000);
  });

  it('a watch that stays silent past the client limit ends with an error; one that is silent for less does not', async () => {
    let quietMs = 300;
    const s = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders();
      const t = setTimeout(() => res.end(line('BOOKMARK', '9')), quietMs);
      res.on('close', () => clearTimeout(t));
    });
    server = s.server;
    const calm = await watchOnce(s.kc, '/w', {}, () => undefined, new AbortController().signal, { timeoutSeconds: 1, silenceLimitMs: 1000 });
    expect(calm).toBeUndefined();
    quietMs = 2000;
    const dead = await watchOnce(s.kc, '/w', {}, () => undefined, new AbortController().signal, { timeoutSeconds: 1, silenceLimitMs: 400 });
    expect(String(dead)).toMatch(/timeout/i);
  });

  it('an abort ends the watch at once and is not an error', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders();
    });
    server = s.server;
    const ac = new AbortController();
    const p = watchOnce(s.kc, '/w', {}, () => undefined, ac.signal);
    await new Promise((r) => setTimeout(r, 100));
    ac.abort();
    await expect(p).resolves.toBeUndefined();
  });

  it('client-node still has the silence limit this module sets (a rename would silently bring back the 30 s re-lists)', () => {
    const w = new Watch(new KubeConfig()) as unknown as { requestTimeoutMs?: unknown };
    expect(typeof w.requestTimeoutMs).toBe('number');
  });
});

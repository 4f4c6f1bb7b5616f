// A minimal JSON client for the benchmarks' private control planes (test/cluster/control-plane.ts),
// authenticated with the admin client certificate: many requests in flight over keep-alive sockets,
// no process per call (kubectl's ~100 ms start would blur the figures), and a watch stream.
import { Agent, request } from 'node:https';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ControlPlane } from '../cluster/control-plane.js';

export type Api = (method: string, path: string, body?: unknown) => Promise<unknown>;

function agentFor(cp: ControlPlane, maxSockets: number): Agent {
  return new Agent({ keepAlive: true, maxSockets, ca: readFileSync(cp.caFile), cert: readFileSync(join(cp.dir, 'admin.crt')), key: readFileSync(join(cp.dir, 'admin.key')) });
}

export function client(cp: ControlPlane): Api {
  const agent = agentFor(cp, 16);
  return (method, path, body) => new Promise((res, rej) => {
    const req = request(`${cp.server}${path}`, { method, agent, headers: { 'content-type': method === 'PATCH' ? 'application/merge-patch+json' : 'application/json' } }, (r) => {
      let text = '';
      r.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => {
        if ((r.statusCode ?? 500) >= 300) rej(new Error(`${method} ${path}: ${r.statusCode} ${text.slice(0, 300)}`));
        else res(text ? JSON.parse(text) : undefined);
      });
    });
    req.on('error', rej);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/**
 * Watches a collection (`path` without `?watch`), calling `onEvent` with each event's type and object
 * as it arrives, stamped with performance.now(). Starts with an ADDED event per existing object. A
 * stream the server ends (kube-apiserver ends every watch after 30–60 min, --min-request-timeout) is
 * reopened from the last resourceVersion seen (bookmarks included), so no event in between is lost;
 * only when that version is gone (410) does it start over with ADDED events, and `onEvent` then
 * gets ('RESTART', undefined) first so the caller can tell. `stop()` closes it.
 */
export function watch<T>(cp: ControlPlane, path: string, onEvent: (type: string, obj: T, at: number) => void): { stop: () => void } {
  const agent = agentFor(cp, 1);
  let stopped = false;
  let current: ReturnType<typeof request> | undefined;
  let rv = '';
  const open = (): void => {
    if (stopped) return;
    const from = rv ? `&resourceVersion=${encodeURIComponent(rv)}` : '';
    current = request(`${cp.server}${path}${path.includes('?') ? '&' : '?'}watch=1&allowWatchBookmarks=true${from}`, { agent }, (r) => {
      let buf = '';
      r.setEncoding('utf8').on('data', (c: string) => {
        const at = performance.now();
        buf += c;
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (!line) continue;
          const e = JSON.parse(line) as { type: string; object: T & { code?: number; metadata?: { resourceVersion?: string } } };
          if (e.type === 'ERROR') {
            // 410: the version is compacted away; start over (the caller is told).
            if (e.object.code === 410) {
              rv = '';
              onEvent('RESTART', undefined as T, at);
            }
            continue;
          }
          rv = e.object.metadata?.resourceVersion ?? rv;
          if (e.type !== 'BOOKMARK') onEvent(e.type, e.object, at);
        }
      }).on('end', () => setTimeout(open, 100)).on('error', () => undefined);
    });
    current.on('error', () => { if (!stopped) setTimeout(open, 200); });
    current.end();
  };
  open();
  return { stop: () => { stopped = true; current?.destroy(); agent.destroy(); } };
}

// Events for humans (kubectl describe / get events). One Event object per (object, reason, message):
// a repeat within `repeatAfterMs` is dropped, a later repeat bumps the Event's count. Failures to
// record are logged, never thrown: an Event is never worth failing a reconcile for.
import type { Logger } from 'pino';
import type { KubeObject, KubePort } from '../kube/ports.js';
import type { Clock } from './clock.js';

export interface EventTarget {
  apiVersion: string;
  kind: string;
  metadata: Pick<KubeObject['metadata'], 'name' | 'namespace' | 'uid'>;
}

export interface EventRecorderOptions {
  kube: Pick<KubePort, 'recordEvent'>;
  /**
   * Namespace of Events about cluster-scoped objects. The API server only accepts such Events
   * (involvedObject.namespace empty) in `default` (and, for new-style events, `kube-system`), and
   * `kubectl describe` only finds them that way, so this is `default` in production.
   */
  namespace: string;
  component: string;
  instance: string;
  clock: Clock;
  log: Logger;
  /** Minimum interval between two recordings of the same event. Default 10 minutes. */
  repeatAfterMs?: number;
}

/** 32-bit FNV-1a, hex: short, stable event names. */
export function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

export class EventRecorder {
  private readonly last = new Map<string, number>();
  private readonly repeatAfterMs: number;

  constructor(private readonly opts: EventRecorderOptions) {
    this.repeatAfterMs = opts.repeatAfterMs ?? 10 * 60_000;
  }

  /** Records a Warning or Normal event about `obj`; resolves once written (or dropped). */
  async record(obj: EventTarget, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const { clock } = this.opts;
    const id = `${obj.metadata.uid ?? obj.metadata.name}|${type}|${reason}|${message}`;
    const now = clock.now();
    const prev = this.last.get(id);
    if (prev !== undefined && now - prev < this.repeatAfterMs) return;
    this.last.set(id, now);
    if (this.last.size > 10_000) this.prune(now);
    const namespace = obj.metadata.namespace ?? this.opts.namespace;
    const name = `${obj.metadata.name}.${fnv1a(id)}`;
    try {
      await this.opts.kube.recordEvent({
        name, namespace, type, reason, message: message.slice(0, 1024), time: now,
        involvedObject: {
          apiVersion: obj.apiVersion, kind: obj.kind, name: obj.metadata.name,
          ...(obj.metadata.uid ? { uid: obj.metadata.uid } : {}),
          ...(obj.metadata.namespace ? { namespace: obj.metadata.namespace } : {}),
        },
        component: this.opts.component, instance: this.opts.instance,
      });
    } catch (err) {
      this.last.delete(id);
      this.opts.log.warn({ err, reason, object: obj.metadata.name }, 'Failed to record Event');
    }
  }

  private prune(now: number): void {
    for (const [k, t] of this.last) if (now - t >= this.repeatAfterMs) this.last.delete(k);
  }
}

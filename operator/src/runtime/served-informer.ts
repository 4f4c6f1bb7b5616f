// An informer over an API the cluster may not serve (an optional API group such as
// resource.k8s.io/v1, or a CRD installed later): discovery is checked at start and every `recheckMs`;
// the informer runs while the resource is served and is stopped when it goes away. Change handlers
// survive restarts, and a start or stop is reported to `onServedChange` so that the owner can
// re-check everything the missed events might have covered.
import type { KubeObject } from '../kube/ports.js';
import { sleep } from './clock.js';
import { Informer, type ChangeHandler, type InformerOptions } from './informer.js';

export interface ServedInformerOptions<T extends KubeObject> extends InformerOptions<T> {
  /** How often to look again whether the API is served. Default 60 s. */
  recheckMs?: number;
  /** Called after the informer synced (true) or stopped because the API went away (false). */
  onServedChange?: (served: boolean) => void;
}

export class ServedInformer<T extends KubeObject> {
  private current: { informer: Informer<T>; abort: AbortController; run: Promise<void> } | undefined;
  private readonly handlers: ChangeHandler<T>[] = [];

  constructor(private readonly opts: ServedInformerOptions<T>) {}

  /** True while the API is served and the cache has synced. */
  get served(): boolean {
    return !!this.current?.informer.hasSynced;
  }

  get(name: string, namespace?: string): T | undefined {
    return this.current?.informer.get(name, namespace);
  }

  onChange(handler: ChangeHandler<T>): void {
    this.handlers.push(handler);
  }

  /** Checks discovery until `signal` aborts; resolves after the informer (if any) stopped. */
  async run(signal: AbortSignal): Promise<void> {
    const { kube, resource, log, clock } = this.opts;
    while (!signal.aborted) {
      let exists: boolean | undefined;
      try {
        exists = await kube.resourceExists(resource);
      } catch (err) {
        log.warn({ err, resource: resource.plural }, 'Failed to discover an optional API');
      }
      if (exists === true && !this.current) await this.start(signal);
      else if (exists === false && this.current) await this.stop();
      await sleep(clock, this.opts.recheckMs ?? 60_000, signal).catch(() => undefined);
    }
    await this.stop();
  }

  private async start(signal: AbortSignal): Promise<void> {
    const informer = new Informer<T>(this.opts);
    for (const h of this.handlers) informer.onChange(h);
    const abort = new AbortController();
    const stop = () => abort.abort();
    signal.addEventListener('abort', stop, { once: true });
    const run = informer.run(abort.signal).finally(() => signal.removeEventListener('abort', stop));
    this.current = { informer, abort, run };
    const synced = await Promise.race([informer.synced().then(() => true), run.then(() => false)]);
    if (synced) {
      this.opts.log.info({ resource: this.opts.resource.plural, objects: informer.size }, 'Watching an optional API');
      this.opts.onServedChange?.(true);
    }
  }

  private async stop(): Promise<void> {
    const cur = this.current;
    if (!cur) return;
    this.current = undefined;
    cur.abort.abort();
    await cur.run;
    this.opts.log.info({ resource: this.opts.resource.plural }, 'Optional API went away; stopped watching it');
    this.opts.onServedChange?.(false);
  }
}

// Leader election on a coordination.k8s.io/v1 Lease, after client-go's leaderelection: a candidate
// takes the lease when it is free or when its holder has not renewed it for leaseDuration, judged by
// the candidate's own clock since it last saw the record change (no cross-node clock comparison).
// The leader renews every retryPeriod and steps down when it could not renew for renewDeadline.
// On graceful shutdown the leader releases the lease so a standby takes over at once.
import type { Logger } from 'pino';
import { isKubeError } from '../kube/errors.js';
import type { KubePort, LeaseRecord } from '../kube/ports.js';
import { sleep, type Clock } from './clock.js';

export interface LeaderElectionOptions {
  kube: Pick<KubePort, 'getLease' | 'createLease' | 'updateLease'>;
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs: number;
  /** How long a leader keeps leading without a successful renewal. Default 2/3 of the lease duration. */
  renewDeadlineMs?: number;
  /** Pause between attempts. Default 1/5 of the lease duration. */
  retryPeriodMs?: number;
  clock: Clock;
  log: Logger;
  /** Runs while leading; `signal` aborts when leadership is lost or on shutdown. */
  onStartedLeading(signal: AbortSignal): Promise<void>;
  /** Called after leading stopped (lost or shut down). */
  onStoppedLeading?(): void;
  /** Called with the holder's identity whenever a different holder is observed. */
  onNewLeader?(identity: string): void;
}

function timeout<T>(clock: Clock, ms: number, p: Promise<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    const cancel = clock.setTimer(ms, () => reject(new Error(`lease request timed out after ${ms} ms`)));
    p.then(
      (v) => {
        cancel();
        resolve(v);
      },
      (e: unknown) => {
        cancel();
        reject(e);
      },
    );
  });
}

/**
 * Campaigns for the lease until `signal` aborts, running `onStartedLeading` each time leadership is
 * won (and aborting it when leadership is lost). Never throws for API errors; resolves after the
 * signal aborted and the lease was released (when held).
 */
export async function runLeaderElection(opts: LeaderElectionOptions, signal: AbortSignal): Promise<void> {
  const { kube, namespace, name, identity, clock, log } = opts;
  const leaseMs = opts.leaseDurationMs;
  const renewDeadlineMs = opts.renewDeadlineMs ?? Math.floor((leaseMs * 2) / 3);
  const retryMs = opts.retryPeriodMs ?? Math.floor(leaseMs / 5);
  const requestTimeoutMs = Math.max(1000, Math.floor(renewDeadlineMs / 2));
  let observed: LeaseRecord | undefined;
  let observedAt = 0;
  let lastHolder: string | undefined;

  const sameRecord = (a: LeaseRecord | undefined, b: LeaseRecord) =>
    !!a && a.holderIdentity === b.holderIdentity && a.renewTime === b.renewTime && a.resourceVersion === b.resourceVersion;

  /** One attempt to take or renew the lease; true when we hold it afterwards. */
  const tryAcquireOrRenew = async (): Promise<boolean> => {
    const now = clock.now();
    const seconds = Math.max(1, Math.ceil(leaseMs / 1000));
    let cur: LeaseRecord | undefined;
    try {
      cur = await timeout(clock, requestTimeoutMs, kube.getLease(namespace, name));
      if (!cur) {
        observed = await timeout(clock, requestTimeoutMs, kube.createLease(namespace, name, {
          holderIdentity: identity, leaseDurationSeconds: seconds, acquireTime: now, renewTime: now, leaseTransitions: 0,
        }));
        observedAt = clock.now();
        return true;
      }
    } catch (err) {
      if (!isKubeError(err, 'AlreadyExists')) log.warn({ err, lease: `${namespace}/${name}` }, 'Failed to read or create the leader Lease');
      return false;
    }
    if (!sameRecord(observed, cur)) {
      observed = cur;
      observedAt = now;
    }
    const holder = cur.holderIdentity ?? '';
    if (holder && holder !== lastHolder) {
      lastHolder = holder;
      if (holder !== identity) opts.onNewLeader?.(holder);
    }
    const heldByOther = holder !== '' && holder !== identity;
    const holderLeaseMs = (cur.leaseDurationSeconds ?? seconds) * 1000;
    if (heldByOther && observedAt + holderLeaseMs > now) return false;
    const next: LeaseRecord = {
      holderIdentity: identity,
      leaseDurationSeconds: seconds,
      acquireTime: holder === identity ? cur.acquireTime ?? now : now,
      renewTime: now,
      leaseTransitions: holder === identity ? cur.leaseTransitions ?? 0 : (cur.leaseTransitions ?? 0) + 1,
      resourceVersion: cur.resourceVersion,
    };
    try {
      observed = await timeout(clock, requestTimeoutMs, kube.updateLease(namespace, name, next));
      observedAt = clock.now();
      return true;
    } catch (err) {
      if (!isKubeError(err, 'Conflict')) log.warn({ err, lease: `${namespace}/${name}` }, 'Failed to update the leader Lease');
      return false;
    }
  };

  const release = async () => {
    if (!observed || observed.holderIdentity !== identity) return;
    const now = clock.now();
    try {
      await timeout(clock, requestTimeoutMs, kube.updateLease(namespace, name, {
        ...observed, holderIdentity: '', leaseDurationSeconds: 1, acquireTime: now, renewTime: now,
      }));
      log.info({ lease: `${namespace}/${name}`, identity }, 'Released leader Lease');
    } catch (err) {
      log.warn({ err, lease: `${namespace}/${name}` }, 'Failed to release the leader Lease');
    }
  };

  while (!signal.aborted) {
    // Candidate: try until we hold the lease.
    while (!signal.aborted && !(await tryAcquireOrRenew())) {
      await sleep(clock, retryMs, signal).catch(() => undefined);
    }
    if (signal.aborted) break;
    log.info({ lease: `${namespace}/${name}`, identity }, 'Acquired leader Lease');
    const leading = new AbortController();
    const stopLeading = () => leading.abort(new Error('shutdown'));
    signal.addEventListener('abort', stopLeading, { once: true });
    const work = opts.onStartedLeading(leading.signal).catch((err: unknown) => {
      log.error({ err }, 'Leader work failed');
    });
    // Leader: renew until the deadline passes without success, or shutdown.
    let lastRenew = clock.now();
    while (!signal.aborted) {
      await sleep(clock, retryMs, signal).catch(() => undefined);
      if (signal.aborted) break;
      if (await tryAcquireOrRenew()) {
        lastRenew = clock.now();
      } else if (clock.now() - lastRenew >= renewDeadlineMs || (observed && observed.holderIdentity !== identity)) {
        log.error({ lease: `${namespace}/${name}`, identity }, 'Lost leader Lease');
        break;
      }
    }
    leading.abort(new Error('leadership lost'));
    signal.removeEventListener('abort', stopLeading);
    await work;
    opts.onStoppedLeading?.();
    if (signal.aborted) await release();
  }
}

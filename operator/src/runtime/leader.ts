// Leader election on a coordination.k8s.io/v1 Lease, after client-go's leaderelection: a candidate
// takes the lease when it is free or when its holder has not renewed it for leaseDuration, judged by
// the candidate's own clock since it last saw the record change (no cross-node clock comparison).
// The leader renews every retryPeriod and steps down when it could not renew for renewDeadline.
//
// Stepping down is ordered so that two replicas never write at once, and bounded:
// * shutdown (the signal aborts): the leader's work is told to stop, the leader keeps renewing the
//   Lease while that work finishes its in-flight writes (at most drainTimeoutMs), then releases the
//   Lease (one request, at most releaseTimeoutMs) so a standby takes over at its next retry instead
//   of after leaseDuration. Releasing first would let the next leader start while our last writes
//   (server-side applies with force) may still land over its own.
// * loss (no renewal for renewDeadline, or another holder seen): the work must be gone before anyone
//   else can take the Lease, i.e. within leaseDuration - renewDeadline; when it is, the replica
//   campaigns again as a standby, as a fresh process would; when it is not, the election ends with
//   drained: false and the caller must exit (only the process's end stops that work).
// * the work ending by itself (it failed): the replica steps down (releasing) and the election ends,
//   so the caller exits and the restart (with the kubelet's backoff) starts clean.
import type { Logger } from 'pino';
import { isKubeError } from '../kube/errors.js';
import type { KubePort, LeaseRecord } from '../kube/ports.js';
import type { Clock } from './clock.js';

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
  /**
   * Runs while leading; `signal` aborts when leadership is lost or on shutdown. Must resolve only
   * after it aborted and every write it started has finished (resolving earlier is a failure).
   */
  onStartedLeading(signal: AbortSignal): Promise<void>;
  /** Called after leading stopped (lost, failed or shut down), once the work stopped or the drain gave up. */
  onStoppedLeading?(): void;
  /** Called with the holder's identity whenever a different holder is observed. */
  onNewLeader?(identity: string): void;
  /** On shutdown, how long the leader's work may take to stop (the Lease is renewed meanwhile). Default 10 s. */
  drainTimeoutMs?: number;
  /** Bound of the release request on the way out. Default min(5 s, renewDeadline / 2). */
  releaseTimeoutMs?: number;
}

/** How the election ended (it runs until shutdown, or until this process can no longer lead safely). */
export interface LeaderElectionResult {
  /**
   * 'shutdown': the signal aborted. 'lost': leadership was lost and the work did not stop in time.
   * 'failed': the leader's work ended by itself while leading.
   */
  reason: 'shutdown' | 'lost' | 'failed';
  /** False when the last term's work had not stopped when the election ended: the process must exit. */
  drained: boolean;
  /** The Lease was handed back (holder cleared) on the way out. */
  released: boolean;
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
 * won (and aborting it when leadership is lost). Never throws for API errors. Resolves after the
 * signal aborted (the work stopped and the lease released, both bounded), or when this process
 * cannot lead again safely (see LeaderElectionResult).
 */
export async function runLeaderElection(opts: LeaderElectionOptions, signal: AbortSignal): Promise<LeaderElectionResult> {
  const { kube, namespace, name, identity, clock, log } = opts;
  const leaseMs = opts.leaseDurationMs;
  const renewDeadlineMs = opts.renewDeadlineMs ?? Math.floor((leaseMs * 2) / 3);
  const retryMs = opts.retryPeriodMs ?? Math.floor(leaseMs / 5);
  const requestTimeoutMs = Math.max(1000, Math.floor(renewDeadlineMs / 2));
  const drainTimeoutMs = opts.drainTimeoutMs ?? 10_000;
  const releaseTimeoutMs = opts.releaseTimeoutMs ?? Math.min(5000, requestTimeoutMs);
  // After a loss, another replica may lead once leaseDuration has passed since our last renewal,
  // and we noticed at renewDeadline: our work must be gone by then.
  const lostDrainMs = Math.max(1000, leaseMs - renewDeadlineMs);
  const lease = `${namespace}/${name}`;
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
      if (!isKubeError(err, 'AlreadyExists')) log.warn({ err, lease }, 'Failed to read or create the leader Lease');
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
      if (!isKubeError(err, 'Conflict')) log.warn({ err, lease }, 'Failed to update the leader Lease');
      return false;
    }
  };

  /**
   * Hands the lease back: only the record we last wrote is replaced (its resourceVersion), so this
   * never clears another holder's lease. True when released.
   */
  const release = async (): Promise<boolean> => {
    if (!observed || observed.holderIdentity !== identity) return false;
    const now = clock.now();
    try {
      observed = await timeout(clock, releaseTimeoutMs, kube.updateLease(namespace, name, {
        ...observed, holderIdentity: '', leaseDurationSeconds: 1, acquireTime: now, renewTime: now,
      }));
      log.info({ lease, identity }, 'Released leader Lease');
      return true;
    } catch (err) {
      log.warn({ err, lease }, 'Failed to release the leader Lease');
      return false;
    }
  };

  /** Resolves after `ms`, or earlier when one of `wake` aborts (listeners are removed either way). */
  const pause = (ms: number, ...wake: AbortSignal[]) => new Promise<void>((resolve) => {
    if (wake.some((w) => w.aborted)) {
      resolve();
      return;
    }
    const done = () => {
      cancel();
      for (const w of wake) w.removeEventListener('abort', done);
      resolve();
    };
    const cancel = clock.setTimer(Math.max(0, ms), done);
    for (const w of wake) w.addEventListener('abort', done, { once: true });
  });

  while (!signal.aborted) {
    // Candidate: try until we hold the lease.
    while (!signal.aborted && !(await tryAcquireOrRenew())) {
      await pause(retryMs, signal);
    }
    if (signal.aborted) break;
    log.info({ lease, identity }, 'Acquired leader Lease');
    const leading = new AbortController();
    const ended = new AbortController(); // aborts when the work has ended
    void Promise.resolve()
      .then(() => opts.onStartedLeading(leading.signal))
      .catch((err: unknown) => {
        log.error({ err }, 'Leader work failed');
      })
      .finally(() => ended.abort());
    // Leader: renew until shutdown, loss, or the work ends by itself.
    let lastRenew = clock.now();
    let reason: LeaderElectionResult['reason'];
    for (;;) {
      await pause(retryMs, ended.signal, signal);
      if (signal.aborted) {
        reason = 'shutdown';
        break;
      }
      if (ended.signal.aborted) {
        log.error({ lease, identity }, 'Leader work stopped by itself; stepping down');
        reason = 'failed';
        break;
      }
      if (await tryAcquireOrRenew()) {
        lastRenew = clock.now();
      } else if (clock.now() - lastRenew >= renewDeadlineMs || (observed && observed.holderIdentity !== identity)) {
        log.error({ lease, identity, sinceRenewMs: clock.now() - lastRenew }, 'Lost leader Lease');
        reason = 'lost';
        break;
      }
    }
    // Stop the work and wait for it (bounded). While shutting down we still hold the lease: keep
    // renewing it, so no one else starts writing while our last writes may still land.
    const stopping = clock.now();
    leading.abort(new Error(reason === 'shutdown' ? 'shutdown' : 'leadership lost'));
    const drainMs = reason === 'lost' ? lostDrainMs : drainTimeoutMs;
    const drainDeadline = stopping + drainMs;
    let holding = reason !== 'lost';
    while (!ended.signal.aborted && clock.now() < drainDeadline) {
      await pause(Math.min(drainDeadline - clock.now(), holding ? retryMs : drainMs), ended.signal);
      if (ended.signal.aborted || !holding || clock.now() >= drainDeadline) continue;
      if (await tryAcquireOrRenew()) {
        lastRenew = clock.now();
      } else if (clock.now() - lastRenew >= renewDeadlineMs || (observed && observed.holderIdentity !== identity)) {
        log.error({ lease, identity }, 'Lost leader Lease while stopping');
        holding = false;
      }
    }
    const drained = ended.signal.aborted;
    // Release only once our work has stopped; the request replaces only our own record.
    const released = drained && holding ? await release() : false;
    log[drained ? 'info' : 'error']({ lease, identity, reason, drained, drainMs: clock.now() - stopping, released },
      drained ? 'Stopped leading' : 'Stopped leading, but the leader work did not stop in time');
    opts.onStoppedLeading?.();
    if (reason !== 'lost' || !drained) return { reason, drained, released };
    // Lost, and all of that term's work has ended: campaign again like a fresh process.
  }
  return { reason: 'shutdown', drained: true, released: false };
}

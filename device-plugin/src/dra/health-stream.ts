// The DRA health stream (DRAResourceHealth.NodeWatchResources): the health of each device the kubelet
// is told about, the open streams, and the timer that re-sends the full list before the kubelet's
// timeout. Nothing is sent before the agent's first cycle (an empty report would mark every device
// Unknown).
import type * as grpc from '@grpc/grpc-js';
import type { DeviceHealth__Input } from '../../../proto/generated/dra-health/v1alpha1/DeviceHealth.js';
import type { NodeWatchResourcesResponse__Input } from '../../../proto/generated/dra-health/v1alpha1/NodeWatchResourcesResponse.js';
import type { Slice } from '../model.js';
import { draDeviceName, resourcePoolName } from './devices.js';
import type { PreparedHolder } from './driver-options.js';

/** The health the kubelet is told about one device (health stream). */
interface DeviceHealthEntry {
  pool: string;
  device: string;
  healthy: boolean;
  message: string;
}

export type HealthStream = grpc.ServerWritableStream<unknown, NodeWatchResourcesResponse__Input>;

export class DeviceHealthStreams {
  private health: DeviceHealthEntry[] = [];
  private healthText = '';
  private readonly streams = new Set<HealthStream>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly nodeName: string,
    /** True once the agent's first cycle arrived. */
    private readonly ready: () => boolean,
    private readonly nowSeconds: (() => number) | undefined,
    private readonly refreshMs: number | undefined,
  ) {}

  /**
   * The health of every device of a DRA pool — draining ones included: they are still prepared for a
   * VM, and the kubelet marks every device a report leaves out Unknown — and of every other slice one
   * of our claims holds; streams get it at once when it changed.
   */
  set(dra: ReadonlySet<string>, slices: readonly Slice[], ours: ReadonlyMap<string, PreparedHolder>): void {
    const health = slices
      .filter((s) => s.kind !== 'VPort' && (dra.has(s.pool) || ours.has(s.id)))
      .map((s) => ({ pool: resourcePoolName(this.nodeName, s.pool), device: draDeviceName(s), healthy: s.health === 'Healthy', message: s.health === 'Healthy' ? '' : (s.reason ?? 'unhealthy').slice(0, 1024) }))
      .sort((a, b) => (a.pool + a.device < b.pool + b.device ? -1 : 1));
    const text = JSON.stringify(health);
    if (text === this.healthText) return;
    this.healthText = text;
    this.health = health;
    for (const st of this.streams) this.send(st);
  }

  private send(st: HealthStream): void {
    if (!this.ready()) return; // an empty report before the first cycle would mark every device Unknown
    const now = Math.floor((this.nowSeconds ?? (() => Date.now() / 1000))());
    const devices: DeviceHealth__Input[] = this.health.map((h) => ({
      device: { poolName: h.pool, deviceName: h.device },
      health: h.healthy ? 'HEALTHY' : 'UNHEALTHY',
      lastUpdatedTime: now,
      healthCheckTimeoutSeconds: 0,
      message: h.message,
    }));
    st.write({ devices });
  }

  /** NodeWatchResources: keeps the stream until it ends and sends it the current list. */
  watch(call: HealthStream): void {
    this.streams.add(call);
    const drop = (): void => {
      this.streams.delete(call);
    };
    call.on('cancelled', drop);
    call.on('close', drop);
    call.on('error', drop);
    this.send(call); // nothing before the first cycle: the first report follows it
  }

  /** Starts the periodic full re-send (once). */
  startRefresh(): void {
    this.timer ??= setInterval(() => {
      for (const st of this.streams) this.send(st);
    }, this.refreshMs ?? 10_000);
    this.timer.unref();
  }

  /** Stops the re-send and ends every open stream. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    for (const st of this.streams) st.end();
    this.streams.clear();
  }
}

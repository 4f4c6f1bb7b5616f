// Helpers shared by the guest-side scenarios of the real-kernel suite (test/kernel/guest/*): shell
// calls, polling, sysfs reads and writes as the agent does them, and the nested VM (the host's QEMU
// with vfio-pci devices, monitor on stdin/stdout: KubeVirt's virt-launcher stand-in). Runs INSIDE the
// guest only.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, readFileSync, readdirSync, readlinkSync, writeFileSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';

export const SYS = '/sys/bus/pci/devices';

export function sh(cmd: string, args: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 8 << 20 }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd} ${args.join(' ')}: ${String(stderr).trim() || err.message}`)) : resolve(String(stdout)))),
  );
}
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number, everyMs = 100): Promise<T> {
  const end = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    await sleep(everyMs);
  }
}
export const attr = (bdf: string, a: string): string => readFileSync(join(SYS, bdf, a), 'utf8').trim();
export const driverOf = (bdf: string): string | undefined => (existsSync(join(SYS, bdf, 'driver')) ? basename(readlinkSync(join(SYS, bdf, 'driver'))) : undefined);
export const groupOf = (bdf: string): string => basename(readlinkSync(join(SYS, bdf, 'iommu_group')));
export function find(vendor: string, device: string): string {
  const hit = readdirSync(SYS).find((b) => attr(b, 'vendor') === `0x${vendor}` && attr(b, 'device') === `0x${device}`);
  if (!hit) throw new Error(`no PCI function ${vendor}:${device}`);
  return hit;
}
export function vfsOf(pf: string): string[] {
  return readdirSync(join(SYS, pf))
    .filter((e) => /^virtfn\d+$/.test(e))
    .sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)))
    .map((e) => basename(readlinkSync(join(SYS, pf, e))));
}
/** A sysfs write as the agent does it (open O_WRONLY, one write); resolves with the errno code or 'ok'. */
export function tryWrite(path: string, value: string): string {
  try {
    const fd = openSync(path, constants.O_WRONLY); // write-only attributes (bind, drivers_probe) refuse read opens
    try {
      writeSync(fd, value);
    } finally {
      closeSync(fd);
    }
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

/** The nested VM: the host's QEMU with vfio-pci devices, monitor on stdin/stdout. */
export class NestedVm {
  private buf = '';
  /** Everything QEMU printed (monitor answers included), never cleared. */
  transcript = '';
  readonly proc: ChildProcess;
  private constructor(proc: ChildProcess) {
    this.proc = proc;
    const take = (c: Buffer): void => {
      this.buf += c.toString();
      this.transcript += c.toString();
    };
    proc.stdout?.on('data', take);
    proc.stderr?.on('data', take);
  }
  static async start(devices: string[]): Promise<NestedVm> {
    const args = ['-machine', 'q35', '-accel', 'tcg', '-m', '128', '-nodefaults', '-display', 'none', '-monitor', 'stdio', '-S'];
    for (const d of devices) args.push('-device', d);
    const vm = new NestedVm(spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] }));
    await vm.prompt(60_000);
    return vm;
  }
  private async prompt(timeoutMs: number): Promise<string> {
    await until('the nested QEMU monitor prompt', () => this.buf.includes('(qemu)') || this.proc.exitCode !== null, timeoutMs, 50);
    if (this.proc.exitCode !== null) throw new Error(`nested QEMU exited ${this.proc.exitCode}: ${this.buf.slice(-2000)}`);
    const out = this.buf;
    this.buf = '';
    return out;
  }
  async command(cmd: string): Promise<string> {
    this.proc.stdin?.write(`${cmd}\n`);
    await sleep(200);
    const out = await this.prompt(30_000);
    return out.replace(new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*[A-Za-z]`, 'g'), ''); // the monitor's line-editing escapes
  }
  async quit(): Promise<void> {
    this.proc.stdin?.write('quit\n');
    await until('the nested QEMU to exit', () => this.proc.exitCode !== null, 30_000, 50).catch(() => this.proc.kill('SIGKILL'));
  }
  get output(): string {
    return this.buf;
  }
}

/** The VFIO group numbers a process has open. */
export function vfioOpen(pid: number): string[] {
  const out: string[] = [];
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      const m = /^\/dev\/vfio\/(\d+)$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.push(m[1] as string);
    } catch {
      /* closed meanwhile */
    }
  }
  return out.sort((a, b) => Number(a) - Number(b));
}

/** One scenario's record in results.json (the host-side jest suite asserts on it). */
export interface ScenarioResult { ok: boolean; ms: number; details: Record<string, unknown>; error?: string }

/** Seconds since the guest booted. */
export const uptime = (): number => Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);

/**
 * The scenarios' record in `<out>/results.json` (continuing what is there when `resume`: the second
 * boot adds to the first boot's), a log line with the time since this call, and the runner: each
 * scenario's thrown error is its failure, recorded and saved as it finishes; the runner never throws.
 */
export function scenarioRecord(out: string, label: string, resume = false): {
  results: Record<string, ScenarioResult>;
  figures: Record<string, number>;
  save: () => void;
  log: (msg: string) => void;
  scenario: (name: string, fn: (d: Record<string, unknown>) => Promise<void>) => Promise<boolean>;
} {
  const t0 = performance.now();
  let prior: { results: Record<string, ScenarioResult>; figures: Record<string, number> } = { results: {}, figures: {} };
  if (resume) {
    try {
      prior = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as typeof prior;
    } catch { /* nothing recorded yet */ }
  }
  const { results, figures } = prior;
  const save = (): void => writeFileSync(join(out, 'results.json'), `${JSON.stringify({ results, figures, uptimeAtEnd: uptime() }, null, 2)}\n`);
  const log = (msg: string): void => void process.stdout.write(`[${label} +${((performance.now() - t0) / 1000).toFixed(1)} s] ${msg}\n`);
  const scenario = async (name: string, fn: (d: Record<string, unknown>) => Promise<void>): Promise<boolean> => {
    const d: Record<string, unknown> = {};
    const t = performance.now();
    log(`${name}: start`);
    try {
      await fn(d);
      results[name] = { ok: true, ms: Math.round(performance.now() - t), details: d };
    } catch (err) {
      results[name] = { ok: false, ms: Math.round(performance.now() - t), details: d, error: err instanceof Error ? err.message : String(err) };
    }
    log(`${name}: ${results[name]?.ok ? 'ok' : `FAILED: ${results[name]?.error}`} (${results[name]?.ms} ms)`);
    save();
    return results[name]?.ok ?? false;
  };
  return { results, figures, save, log, scenario };
}

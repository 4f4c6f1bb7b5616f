// The kernel daemon's control socket (kernel-daemon.ts): lets another process hold and release
// VFIO groups and vports of the fake kernel, and run the fake NVIDIA host tools, over the unix socket
// `<root>/.fake-kernel/control`, one command a line, one reply line each (`ok [data]` or
// `error <ERRNO> <message>`):
//      open <group> <holder> [release-after-ms]   (with ms: let go that long after each request)
//      close <group> <holder>
//      hold-vport <wwpn> <holder>
//      release-vport <wwpn> <holder>
//      status                                     (ok {"groups":[...],"vports":[...],"violations":N})
//      nvidia-tool <sriov-manage|nvidia-smi> ...  (the fake NVIDIA host tools, nvidia.ts; ok <output>)
//    While a connection that opened a group is up, requests to let go of it arrive on it as lines
//    `request <group> <holder> <path>`. Holds outlive the connection (holders are names, not
//    processes). `kernelControl(root, line)` sends one command.
import { mkdir, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { KernelError } from './kernel-error.js';
import type { FakeKernel, OpenOptions, VfioRequest } from './kernel.js';
import { nvidiaTool } from './nvidia.js';

/** The control socket's path under the tree's root. */
export const CONTROL_REL = '.fake-kernel/control';

/** One control command (see the file header) → its reply line. */
async function controlCommand(kernel: FakeKernel, line: string, opened: { group: number; holder: string }[]): Promise<string> {
  const [cmd, a, holder, extra] = line.split(/\s+/);
  const need = (): string => {
    if (a === undefined || holder === undefined) throw new KernelError('EINVAL', `usage: ${cmd ?? ''} <id> <holder>`);
    return holder;
  };
  const group = (): number => {
    const g = Number(a);
    if (!Number.isInteger(g)) throw new KernelError('EINVAL', `bad group ${JSON.stringify(a)}`);
    return g;
  };
  switch (cmd) {
    case 'open': {
      const h = need();
      const g = group();
      const after = extra === undefined ? undefined : Number(extra);
      if (after !== undefined && !(after >= 0)) throw new KernelError('EINVAL', `bad release-after-ms ${JSON.stringify(extra)}`);
      const o: OpenOptions = {};
      if (after !== undefined) {
        let pending = false;
        o.onRequest = () => {
          if (pending) return;
          pending = true;
          setTimeout(() => {
            try {
              kernel.closeVfio(g, h);
            } catch {
              /* closed already */
            }
          }, after);
        };
      }
      await kernel.openVfio(g, h, o);
      opened.push({ group: g, holder: h });
      return 'ok';
    }
    case 'close':
      kernel.closeVfio(group(), need());
      return 'ok';
    case 'hold-vport':
      await kernel.holdVport(a ?? '', need());
      return 'ok';
    case 'release-vport':
      kernel.releaseVport(a ?? '', need());
      return 'ok';
    case 'nvidia-tool': // the fake NVIDIA host tools (nvidia-tool.ts): their sysfs writes, witnessed here
      return `ok ${(await nvidiaTool(kernel, line.split(/\s+/).slice(1))).replace(/\n/g, ' ')}`;
    case 'status':
      return `ok ${JSON.stringify({ ...kernel.ownership.holders(), violations: kernel.violations.length })}`;
    default:
      throw new KernelError('EINVAL', `unknown command ${JSON.stringify(cmd ?? '')}`);
  }
}

/** Serves the control socket at `file` (see the file header). */
export async function serveControl(kernel: FakeKernel, file: string): Promise<net.Server> {
  await mkdir(path.dirname(file), { recursive: true });
  await rm(file, { force: true });
  const server = net.createServer((sock) => {
    const opened: { group: number; holder: string }[] = [];
    let queue: Promise<void> = Promise.resolve();
    let buf = '';
    const onRequest = (r: VfioRequest): void => {
      if (!sock.destroyed && opened.some((o) => o.group === r.group && o.holder === r.holder)) sock.write(`request ${r.group} ${r.holder} ${r.path}\n`);
    };
    kernel.on('vfio-request', onRequest);
    sock.on('close', () => kernel.off('vfio-request', onRequest));
    sock.on('error', () => undefined);
    sock.on('data', (c: Buffer) => {
      buf += c.toString('utf8');
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line === '') continue;
        queue = queue.then(async () => {
          let reply: string;
          try {
            reply = await controlCommand(kernel, line, opened);
          } catch (err) {
            const code = err instanceof KernelError ? err.code : 'EIO';
            const msg = err instanceof Error ? err.message.replace(/^[A-Z]+: /, '') : String(err);
            reply = `error ${code} ${msg.replace(/\n/g, ' ')}`;
          }
          if (!sock.destroyed) sock.write(`${reply}\n`);
        });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(file, () => resolve());
  });
  return server;
}

/**
 * Sends one command to the control socket of the kernel daemon over `root` and resolves to the data
 * after `ok` ('' when none); rejects with a KernelError carrying the errno of an `error` reply.
 */
export async function kernelControl(root: string, line: string, timeoutMs = 10_000): Promise<string> {
  const sock = net.createConnection(path.join(root, CONTROL_REL));
  try {
    return await new Promise<string>((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => reject(new Error(`fake kernel control: no reply to ${JSON.stringify(line)} in ${timeoutMs} ms`)), timeoutMs);
      const done = (f: () => void): void => {
        clearTimeout(timer);
        f();
      };
      sock.on('error', (err) => done(() => reject(err)));
      sock.on('connect', () => sock.write(`${line}\n`));
      sock.on('data', (c: Buffer) => {
        buf += c.toString('utf8');
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          const reply = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (reply.startsWith('request ')) continue;
          const m = /^error (\S+) ?(.*)$/.exec(reply);
          if (m) done(() => reject(new KernelError(m[1] as string, m[2] ?? '')));
          else done(() => resolve(reply.replace(/^ok ?/, '')));
          return;
        }
      });
    });
  } finally {
    sock.destroy();
  }
}

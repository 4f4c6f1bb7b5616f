// FC NPIV in the fake kernel (kernel.ts): vport_create/vport_delete on an FC host, the vport's own
// vport_delete, and the SCSI hosts a vport brings.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { KernelError } from './kernel-error.js';
import { exists, link, list, readTrim, wwnAttr } from './kernel-tree.js';
import type { FakeKernel } from './kernel.js';
import { normalizeWwn, type WriteGate } from './vfio.js';

/** WWPNs of the NPIV vports on the function's FC hosts. */
export async function vportsOn(k: FakeKernel, dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const h of await list(dir)) {
    if (!/^host\d+$/.test(h)) continue;
    for (const v of await list(path.join(dir, h))) {
      if (!v.startsWith('vport-')) continue;
      const w = normalizeWwn((await readTrim(path.join(dir, h, v, 'fc_vports', v, 'port_name'))) ?? '');
      if (w) out.push(w);
    }
  }
  return out;
}

export async function nextScsiHost(k: FakeKernel): Promise<number> {
  const used = [...(await list(path.join(k.root, 'class/scsi_host'))), ...(await list(path.join(k.root, 'class/fc_host')))]
    .map((h) => Number(h.replace(/^host/, '')))
    .filter(Number.isInteger);
  return used.length === 0 ? 0 : Math.max(...used) + 1;
}

export async function vportCreate(k: FakeKernel, fcDir: string, v: string): Promise<void> {
  const m = /^([0-9a-fA-F]{16}):([0-9a-fA-F]{16})$/.exec(v);
  if (!m) throw new KernelError('EINVAL', `vport_create takes "<16 hex WWPN>:<16 hex WWNN>", got ${JSON.stringify(v)}`);
  const wwpn = (m[1] as string).toLowerCase();
  const wwnn = (m[2] as string).toLowerCase();
  const max = Number(await readTrim(path.join(fcDir, 'max_npiv_vports')));
  const inUse = Number(await readTrim(path.join(fcDir, 'npiv_vports_inuse')));
  if (!(inUse < max)) throw new KernelError('ENOSPC', `${path.basename(fcDir)}: ${inUse} of ${max} NPIV vports in use`);
  const hostName = path.basename(fcDir);
  const hostDir = path.dirname(path.dirname(fcDir));
  for (const e of await list(hostDir)) {
    if (!e.startsWith('vport-')) continue;
    const pn = await readTrim(path.join(hostDir, e, 'fc_vports', e, 'port_name'));
    if (pn !== undefined && BigInt(pn) === BigInt(`0x${wwpn}`)) throw new KernelError('EEXIST', `vport with WWPN ${wwpn} exists`);
  }
  const hostNo = hostName.replace(/^host/, '');
  let n = 0;
  while (await exists(path.join(hostDir, `vport-${hostNo}:0-${n}`))) n++;
  const vname = `vport-${hostNo}:0-${n}`;
  const vdir = path.join(hostDir, vname);
  const attrs = path.join(vdir, 'fc_vports', vname);
  await mkdir(attrs, { recursive: true });
  const files: Record<string, string> = {
    port_name: wwnAttr(wwpn),
    node_name: wwnAttr(wwnn),
    vport_state: 'Active\n',
    vport_last_state: 'Active\n',
    vport_type: 'NPIV\n',
    roles: 'FCP Initiator\n',
    symbolic_name: '\n',
    vport_delete: '',
    vport_disable: '',
  };
  for (const [f, c] of Object.entries(files)) await writeFile(path.join(attrs, f), c);
  await link(attrs, path.join(k.root, 'class/fc_vports', vname));
  const child = `host${await nextScsiHost(k)}`;
  const cfc = path.join(vdir, child, 'fc_host', child);
  await mkdir(cfc, { recursive: true });
  await writeFile(path.join(cfc, 'port_name'), wwnAttr(wwpn));
  await writeFile(path.join(cfc, 'node_name'), wwnAttr(wwnn));
  await writeFile(path.join(cfc, 'port_state'), 'Online\n');
  await writeFile(path.join(cfc, 'port_type'), 'NPIV VPORT\n');
  await mkdir(path.join(vdir, child, 'scsi_host', child), { recursive: true });
  await link(cfc, path.join(k.root, 'class/fc_host', child));
  await link(path.join(vdir, child, 'scsi_host', child), path.join(k.root, 'class/scsi_host', child));
  await writeFile(path.join(fcDir, 'npiv_vports_inuse'), `${inUse + 1}\n`);
}

export async function vportDelete(k: FakeKernel, gate: WriteGate, fcDir: string, v: string): Promise<void> {
  const m = /^([0-9a-fA-F]{16}):([0-9a-fA-F]{16})$/.exec(v);
  if (!m) throw new KernelError('EINVAL', `vport_delete takes "<16 hex WWPN>:<16 hex WWNN>", got ${JSON.stringify(v)}`);
  const hostDir = path.dirname(path.dirname(fcDir));
  for (const e of await list(hostDir)) {
    if (!e.startsWith('vport-')) continue;
    const a = path.join(hostDir, e, 'fc_vports', e);
    const pn = await readTrim(path.join(a, 'port_name'));
    const nn = await readTrim(path.join(a, 'node_name'));
    if (pn !== undefined && nn !== undefined && BigInt(pn) === BigInt(`0x${m[1]}`) && BigInt(nn) === BigInt(`0x${m[2]}`)) {
      await gate.witness([normalizeWwn(m[1] as string) as string]);
      return destroyVport(k, fcDir, path.join(hostDir, e));
    }
  }
  throw new KernelError('ENOENT', `no vport ${v} on ${path.basename(fcDir)}`);
}

export async function vportDeleteSelf(k: FakeKernel, gate: WriteGate, attrsDir: string): Promise<void> {
  const vdir = path.dirname(path.dirname(attrsDir));
  const hostDir = path.dirname(vdir);
  const host = path.basename(hostDir);
  const wwpn = normalizeWwn((await readTrim(path.join(attrsDir, 'port_name'))) ?? '');
  await gate.witness(wwpn ? [wwpn] : []);
  await destroyVport(k, path.join(hostDir, 'fc_host', host), vdir);
}

export async function destroyVport(k: FakeKernel, fcDir: string, vdir: string): Promise<void> {
  const vname = path.basename(vdir);
  for (const c of await list(vdir)) {
    if (/^host\d+$/.test(c)) {
      await rm(path.join(k.root, 'class/fc_host', c), { force: true });
      await rm(path.join(k.root, 'class/scsi_host', c), { force: true });
    }
  }
  await rm(path.join(k.root, 'class/fc_vports', vname), { force: true });
  await rm(vdir, { recursive: true, force: true });
  const inUse = Number(await readTrim(path.join(fcDir, 'npiv_vports_inuse')));
  await writeFile(path.join(fcDir, 'npiv_vports_inuse'), `${Math.max(0, inUse - 1)}\n`);
}

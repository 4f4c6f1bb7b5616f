// A fake NVMe primary controller with SR-IOV and flexible resources, answering the nvme-cli 2.x
// commands the agent sends (`primary-ctrl-caps -o json`, `list-secondary -o json`, `virt-mgmt`),
// as QEMU's emulated controller does. Sources, read for this model (no code taken):
// - QEMU hw/nvme/ctrl.c (v8–v10): `nvme_virt_mngmt` (actions 1 primary allocation, 7 Offline,
//   8 assign, 9 Online; resource type 0 VQ, 1 VI), `nvme_assign_virt_res_to_sec` (the controller
//   must be Offline; nr ≤ VQFRSM/VIFRSM; the increase must fit total − primary's − secondaries'),
//   `nvme_virt_set_state` (Online needs ≥ 1 VI, ≥ 2 VQ and the VF; Offline takes the controller's
//   VQ and VI back to 0), `nvme_update_virt_res` (VQRFA/VIRFA are the sum over secondaries),
//   `nvme_assign_virt_res_to_prim` (QEMU applies the primary's share at its next reset; the model
//   applies it at once: the agent sets it only to 0, before any VF exists), and the defaults for
//   sriov_max_vq_per_vf =
//   sriov_vq_flexible / sriov_max_vfs (same for VI);
// - the values QEMU 10 reported in test/kernel for `sriov_max_vfs=4,sriov_vq_flexible=8,
//   sriov_vi_flexible=4` (CAPS in device-plugin/src/carving/nvme.test.ts);
// - nvme-cli 2.x JSON key names of list-secondary (carving/nvme.ts parseSecondaries).
// Errors are thrown as nvme-cli prints them ("NVMe status: ..."), which the agent only shows.
import type { NvmeCli } from '../../device-plugin/src/carving/nvme.js';

export interface FakeNvmeOptions {
  maxVfs: number;
  vqFlexible: number;
  viFlexible: number;
  /** Per secondary maximum (QEMU sriov_max_vq_per_vf; default vqFlexible / maxVfs). */
  maxVqPerVf?: number;
  maxViPerVf?: number;
}

interface Sec {
  scid: number;
  vfn: number;
  online: boolean;
  nvq: number;
  nvi: number;
}

/** Status codes QEMU returns (NVMe base specification, Virtualization Management). */
const INVALID_CTRL_ID = 'NVMe status: INVALID_CTRL_ID: an invalid controller identifier was specified(0x11f)';
const INVALID_SEC_CTRL_STATE = 'NVMe status: INVALID_SEC_CTRL_STATE: the action requested for the secondary controller is invalid based on the current state(0x120)';
const INVALID_NUM_RESOURCES = 'NVMe status: INVALID_NUM_RESOURCES: the number of resources specified is invalid(0x121)';
const INVALID_RESOURCE_ID = 'NVMe status: INVALID_RESOURCE_ID: at least one of the specified resource identifiers was invalid(0x122)';

export class FakeNvmeCtrl {
  readonly secs: Sec[];
  /** VFs enabled (sriov_numvfs): Online needs the VF. */
  numVfs = 0;
  vqrfap = 0;
  virfap = 0;
  readonly calls: string[] = [];

  readonly o: FakeNvmeOptions;

  constructor(o: FakeNvmeOptions) {
    this.o = o;
    this.secs = Array.from({ length: o.maxVfs }, (_, i) => ({ scid: i + 1, vfn: i + 1, online: false, nvq: 0, nvi: 0 }));
  }

  /** The controller's state as JSON (the fake CLI keeps it in a file between commands). */
  toJSON(): { o: FakeNvmeOptions; secs: Sec[]; vqrfap: number; virfap: number } {
    return { o: this.o, secs: this.secs, vqrfap: this.vqrfap, virfap: this.virfap };
  }

  static fromJSON(j: ReturnType<FakeNvmeCtrl['toJSON']>): FakeNvmeCtrl {
    const f = new FakeNvmeCtrl(j.o);
    f.secs.splice(0, f.secs.length, ...j.secs);
    f.vqrfap = j.vqrfap;
    f.virfap = j.virfap;
    return f;
  }

  private get maxVq(): number {
    return this.o.maxVqPerVf ?? Math.floor(this.o.vqFlexible / this.o.maxVfs);
  }
  private get maxVi(): number {
    return this.o.maxViPerVf ?? Math.floor(this.o.viFlexible / this.o.maxVfs);
  }

  caps(): Record<string, number> {
    const vqrfa = this.secs.reduce((s, x) => s + x.nvq, 0);
    const virfa = this.secs.reduce((s, x) => s + x.nvi, 0);
    return { cntlid: 0, portid: 0, crt: 3, vqfrt: this.o.vqFlexible, vqrfa, vqrfap: this.vqrfap, vqprt: 5, vqfrsm: this.maxVq, vqgran: 1, vifrt: this.o.viFlexible, virfa, virfap: this.virfap, viprt: 6, vifrsm: this.maxVi, vigran: 1 };
  }

  /** The fake as nvme-cli: args as the agent passes them (device path ignored). */
  readonly cli: NvmeCli = (args) => {
    this.calls.push(args.join(' '));
    try {
      return Promise.resolve(this.run(args));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  };

  run(args: readonly string[]): string {
    const [cmd] = args;
    if (cmd === 'primary-ctrl-caps') return JSON.stringify(this.caps());
    if (cmd === 'list-secondary') {
      const list = this.secs.map((s) => ({
        'secondary-controller-identifier': s.scid, 'primary-controller-identifier': 0, 'secondary-controller-state': s.online ? 1 : 0,
        'virtual-function-number': s.vfn, 'num-virtual-queues': s.nvq, 'num-virtual-interrupts': s.nvi,
      }));
      return JSON.stringify({ num: list.length, 'secondary-controllers': list });
    }
    if (cmd !== 'virt-mgmt') throw new Error(`fake nvme: unknown command ${cmd ?? ''}`);
    const opt = (f: string): number => {
      const i = args.indexOf(f);
      return i < 0 ? 0 : Number(args[i + 1]);
    };
    const cntlid = opt('-c');
    const rt = opt('-r');
    const act = opt('-a');
    const nr = opt('-n');
    if (rt !== 0 && rt !== 1) throw new Error(INVALID_RESOURCE_ID);
    const total = rt ? this.o.viFlexible : this.o.vqFlexible;
    const secSum = this.secs.reduce((s, x) => s + (rt ? x.nvi : x.nvq), 0);
    if (act === 1) {
      if (cntlid !== 0) throw new Error(INVALID_CTRL_ID);
      if (nr > total - secSum) throw new Error(INVALID_RESOURCE_ID);
      if (rt) this.virfap = nr;
      else this.vqrfap = nr;
      return `success, Number of Controller Resources Modified (NRM):${nr}`;
    }
    const sc = this.secs.find((s) => s.scid === cntlid);
    if (!sc) throw new Error(INVALID_CTRL_ID);
    if (act === 8) {
      if (sc.online) throw new Error(INVALID_SEC_CTRL_STATE);
      if (nr > (rt ? this.maxVi : this.maxVq)) throw new Error(INVALID_NUM_RESOURCES);
      const free = total - (rt ? this.virfap : this.vqrfap) - secSum;
      if (nr - (rt ? sc.nvi : sc.nvq) > free) throw new Error(INVALID_RESOURCE_ID);
      if (rt) sc.nvi = nr;
      else sc.nvq = nr;
      return `success, Number of Controller Resources Modified (NRM):${nr}`;
    }
    if (act === 9) {
      if (sc.nvi < 1 || sc.nvq < 2 || sc.vfn > this.numVfs) throw new Error(INVALID_SEC_CTRL_STATE);
      sc.online = true;
      return 'success';
    }
    if (act === 7) {
      sc.online = false;
      sc.nvq = 0;
      sc.nvi = 0;
      return 'success';
    }
    throw new Error('NVMe status: INVALID_FIELD: a reserved coded value or an unsupported value in a defined field(0x2)');
  }
}

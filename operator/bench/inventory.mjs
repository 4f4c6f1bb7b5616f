// The inventory a simulated agent of the operator benchmarks reports: `pools` NIC PFs (ens<i>f0) with
// 4 VFs each, plus a GPU on the node's NUMA node n % 2: pools*5+1 devices.
export function benchInventory(pools, n) {
  const devs = [];
  for (let p = 0; p < pools; p++) {
    const bus = (0x10 + p).toString(16).padStart(2, '0');
    const pf = `0000:${bus}:00.0`;
    const vfs = [0, 1, 2, 3].map((v) => `0000:${bus}:00.${v + 1}`);
    devs.push({ pciAddress: pf, vendorID: '8086', deviceID: '1593', classCode: '020000', driver: 'ice', numaNode: p % 2, iommuGroup: 10 + p,
      netdevs: [{ name: `ens${p}f0`, operState: 'up' }], sriov: { totalVFs: 64, numVFs: 4, vfs } });
    for (const vf of vfs) devs.push({ pciAddress: vf, vendorID: '8086', deviceID: '1889', classCode: '020000', driver: 'iavf', physfn: pf, numaNode: p % 2 });
  }
  devs.push({ pciAddress: '0000:c1:00.0', vendorID: '10de', deviceID: '25b6', classCode: '030200', driver: 'nvidia', numaNode: n % 2 });
  return devs;
}

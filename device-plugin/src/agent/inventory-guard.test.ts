import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scan } from '../discovery/scan.js';
import type { Inventory } from '../model.js';
import { acceptScan } from './inventory-guard.js';

const dev = (pciAddress: string) => ({ pciAddress });
const node: Inventory = { devices: [dev('0000:81:00.0'), dev('0000:81:00.1')] };
const none: Inventory = { devices: [] };

describe('acceptScan', () => {
  test('a scan with PCI functions is accepted, whatever came before', () => {
    expect(acceptScan(undefined, node)).toEqual({ ok: true });
    expect(acceptScan(node, { devices: [dev('0000:81:00.0')] })).toEqual({ ok: true }); // one gone: a real change
    expect(acceptScan(none, node)).toEqual({ ok: true });
  });

  test('no PCI function while the last accepted inventory had some: suspect', () => {
    const v = acceptScan(node, none);
    expect(v).toEqual({ ok: false, reason: expect.stringContaining('no PCI function found under bus/pci/devices (missing or empty) while the last inventory had 2') });
  });

  test('only non-PCI mdev parents left counts as no PCI function', () => {
    expect(acceptScan(node, { devices: [dev('matrix')] }).ok).toBe(false);
  });

  test('first scan after a restart: suspect when the plan or checkpoint names PCI devices', () => {
    const v = acceptScan(undefined, none, { expected: ['0000:81:00.0', 'matrix'] });
    expect(v).toEqual({ ok: false, reason: expect.stringContaining('while the plan names 1 (0000:81:00.0)') });
    expect(acceptScan(undefined, none, { expected: [] })).toEqual({ ok: true });
  });

  test('a node that never had PCI functions is accepted empty', () => {
    expect(acceptScan(undefined, none)).toEqual({ ok: true });
    expect(acceptScan(none, none)).toEqual({ ok: true });
    expect(acceptScan({ devices: [dev('matrix')] }, { devices: [dev('matrix')] })).toEqual({ ok: true });
  });

  test('an unreadable bus/pci/devices is suspect even with devices known from elsewhere', () => {
    const v = acceptScan(undefined, { devices: [], errors: ['bus/pci/devices: unlistable (EACCES)'] });
    expect(v).toEqual({ ok: false, reason: 'suspect scan: bus/pci/devices: unlistable (EACCES); keeping the last inventory until bus/pci/devices can be read' });
  });

  test('against real scans of a sysfs root: folder missing or empty', async () => {
    const root = mkdtempSync(join(tmpdir(), 'vio-guard-'));
    try {
      expect(acceptScan(node, await scan(root)).ok).toBe(false); // bus/pci/devices missing
      mkdirSync(join(root, 'bus/pci/devices'), { recursive: true });
      expect(acceptScan(node, await scan(root)).ok).toBe(false); // empty
      expect(acceptScan(undefined, await scan(root))).toEqual({ ok: true }); // nothing known: a node without PCI
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

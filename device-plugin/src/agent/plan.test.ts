import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as yaml } from 'yaml';
import { silentLogger } from '../log.js';
import { validatePlan } from './plan.js';
import { FilePlanSource, parsePlanText } from './plan-file.js';

const good = {
  pools: [{ name: 'fast-net', resourceName: 'virtualio.dev/fast-net', class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', count: 4, devices: [{ pciAddress: '0000:81:00.0' }] }],
};

describe('plan validation', () => {
  test('a spec, a whole VirtualIONode and YAML are accepted', () => {
    expect(validatePlan(good)).toStrictEqual({ ok: true, spec: good });
    expect(validatePlan({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'n' }, spec: good })).toStrictEqual({ ok: true, spec: good });
    expect(parsePlanText('pools:\n  - name: fast-net\n    resourceName: virtualio.dev/fast-net\n    class: NIC\n    mode: SRIOV\n    consumption: SRIOVNetwork\n    count: 4\n    devices:\n      - pciAddress: "0000:81:00.0"\n', yaml)).toStrictEqual({ ok: true, spec: good });
  });

  // An empty plan must be explicit: anything that may be a half-written or truncated file is an
  // error (the agent then keeps what it serves), never "no pools" (which releases every slice).
  const yamlPlan = 'pools:\n  - name: fast-net\n    resourceName: virtualio.dev/fast-net\n    class: NIC\n    mode: SRIOV\n    consumption: SRIOVNetwork\n    count: 4\n    devices:\n      - pciAddress: "0000:81:00.0"\n';
  const jsonPlan = JSON.stringify(good, null, 2);
  test.each([
    ['an empty file', '', /the file is empty; an empty plan must say so explicitly: "pools: \[\]"/],
    ['a whitespace-only file', '  \n\t\n', /the file is empty/],
    ['comments only', '# plan for n1\n', /holds no document/],
    ['a document separator only', '---\n', /holds no document/],
    ['an empty object', '{}', /no "pools" list \(the file is incomplete or not a plan\)/],
    ['"pools:" without a value (YAML cut after the key)', 'pools:\n', /no "pools" list/],
    ['truncated JSON', jsonPlan.slice(0, jsonPlan.length - 10), /cannot parse plan \(incomplete or not YAML\/JSON\)/],
    ['JSON cut inside the pools list', jsonPlan.slice(0, jsonPlan.indexOf('[') + 1), /cannot parse plan/],
    ['truncated YAML (inside a pool)', yamlPlan.slice(0, yamlPlan.indexOf('class:')), /pool fast-net\.class/],
    ['truncated YAML (inside a value)', yamlPlan.slice(0, yamlPlan.length - 8), /pciAddress|cannot parse plan/],
    ['a VirtualIONode without spec', 'kind: VirtualIONode\nmetadata: {name: n1}\n', /no "pools" list in spec/],
    ['a VirtualIONode whose spec has no pools', 'kind: VirtualIONode\nspec: {}\n', /no "pools" list in spec/],
  ])('%s is an error, not an empty plan', (_n, text, message) => {
    const r = parsePlanText(text, yaml);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.message).toMatch(message);
  });

  test.each([
    ['YAML', 'pools: []\n'],
    ['JSON', '{"pools": []}'],
    ['a whole VirtualIONode', 'apiVersion: virtualio.dev/v1alpha1\nkind: VirtualIONode\nspec:\n  pools: []\n'],
  ])('an explicit empty pools list in %s is an empty plan', (_n, text) => {
    expect(parsePlanText(text, yaml)).toStrictEqual({ ok: true, spec: { pools: [] } });
  });

  test.each([
    ['not YAML', '{pools: [', /cannot parse plan/],
    ['pools not a list', 'pools: 3', /pools must be a list/],
    ['bad mode', JSON.stringify({ pools: [{ ...good.pools[0], mode: 'Magic' }] }), /pool fast-net\.mode: one of SRIOV/],
    ['bad address', JSON.stringify({ pools: [{ ...good.pools[0], devices: [{ pciAddress: '81:00.0' }] }] }), /devices\[0\]\.pciAddress/],
    ['duplicate names', JSON.stringify({ pools: [good.pools[0], good.pools[0]] }), /duplicate pool name/],
    ['mediated without type', JSON.stringify({ pools: [{ ...good.pools[0], mode: 'Mediated' }] }), /mdevType: required/],
    ['resource without domain', JSON.stringify({ pools: [{ ...good.pools[0], resourceName: 'fast' }] }), /resourceName/],
  ])('%s', (_n, text, message) => {
    const r = parsePlanText(text, yaml);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.message).toMatch(message);
  });
  test('JSON needs no YAML parser; a text that is not JSON asks for it, and then parses as before', () => {
    expect(parsePlanText(JSON.stringify(good))).toStrictEqual({ ok: true, spec: good });
    expect(parsePlanText(JSON.stringify({ kind: 'VirtualIONode', spec: good }))).toStrictEqual({ ok: true, spec: good });
    expect(parsePlanText(yamlPlan)).toMatchObject({ ok: false, needsYaml: true });
    expect(parsePlanText(yamlPlan, yaml)).toStrictEqual({ ok: true, spec: good });
    // Truncated JSON is not JSON: it goes to the YAML parser, which refuses it as before.
    expect(parsePlanText(jsonPlan.slice(0, 20))).toMatchObject({ ok: false, needsYaml: true });
    expect(parsePlanText(jsonPlan.slice(0, 20), yaml)).toMatchObject({ ok: false, message: expect.stringContaining('cannot parse plan') });
  });

  test('NVIDIA vGPU pools may share a GPU; a vGPU pool and any other pool may not', () => {
    const gpu = { class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', count: 1, vfDriver: 'nvidia', devices: [{ pciAddress: '0000:3b:00.0' }] };
    const a = { ...gpu, name: 'a', resourceName: 'virtualio.dev/a', vgpuProfile: 'L40S-12Q' };
    const b = { ...gpu, name: 'b', resourceName: 'virtualio.dev/b', vgpuProfile: 'L40S-24Q' };
    const plain = { ...gpu, name: 'c', resourceName: 'virtualio.dev/c', vfDriver: 'vfio-pci' };
    expect(validatePlan({ pools: [a, b] }).ok).toBe(true);
    expect(validatePlan({ pools: [a, plain] })).toStrictEqual({ ok: false, message: 'pool c.devices[0]: 0000:3b:00.0 is also in pool a' });
  });
});

describe('FilePlanSource', () => {
  test('missing → error, good → ok, bad → error, fixed → ok', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vio-plan-'));
    try {
      const file = join(dir, 'plan.yaml');
      const src = new FilePlanSource(file, silentLogger());
      expect(await src.reload()).toBe(true);
      expect(src.current()).toMatchObject({ kind: 'error', message: expect.stringContaining('cannot read plan file') });
      writeFileSync(file, JSON.stringify(good));
      expect(await src.reload()).toBe(true);
      expect(src.current()).toStrictEqual({ kind: 'ok', spec: good });
      expect(await src.reload()).toBe(false);
      writeFileSync(file, 'pools: [ {name: 1} ]   ');
      expect(await src.reload()).toBe(true);
      expect(src.current().kind).toBe('error');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an emptied or truncated file is an error state with the reason; only "pools: []" empties the plan', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vio-plan-'));
    try {
      const file = join(dir, 'plan.yaml');
      const src = new FilePlanSource(file, silentLogger());
      writeFileSync(file, JSON.stringify(good));
      await src.reload();
      expect(src.current()).toStrictEqual({ kind: 'ok', spec: good });
      writeFileSync(file, '');
      expect(await src.reload()).toBe(true);
      expect(src.current()).toStrictEqual({ kind: 'error', message: `invalid plan file ${file}: the file is empty; an empty plan must say so explicitly: "pools: []"` });
      writeFileSync(file, JSON.stringify(good).slice(0, 30));
      expect(await src.reload()).toBe(true);
      expect(src.current()).toMatchObject({ kind: 'error', message: expect.stringContaining('cannot parse plan') });
      writeFileSync(file, 'pools: []\n');
      expect(await src.reload()).toBe(true);
      expect(src.current()).toStrictEqual({ kind: 'ok', spec: { pools: [] } });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

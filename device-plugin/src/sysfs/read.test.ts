// The tolerant readers: failures become messages; attributes whose read takes the device lock are
// never opened (a FIFO stands for one: opening it for reading would block the test for ever).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AttrReader, LOCKING_ATTRS, listDir } from './read.js';

describe('AttrReader', () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vio-read-'));
    writeFileSync(join(dir, 'vendor'), '0x8086\n');
    writeFileSync(join(dir, 'numa_node'), 'x1\n');
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'sub', 'name'), 'mtty-1\n');
    symlinkSync('../../kernel/iommu_groups/7', join(dir, 'iommu_group'));
  });

  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  test('reads text, ints, links and lists; problems are messages naming the attribute', () => {
    const errors: string[] = [];
    const r = new AttrReader(dir, errors);
    expect(r.matched('vendor', /^0x([0-9a-f]{4})$/, true)?.[1]).toBe('8086');
    expect(r.int('numa_node')).toBeUndefined();
    expect(r.text('absent')).toBeUndefined();
    expect(r.text('absent2', true)).toBeUndefined();
    expect(r.linkBase('iommu_group')).toBe('7');
    expect(r.sub('sub').text('name')).toBe('mtty-1');
    expect(r.list()).toStrictEqual(['iommu_group', 'numa_node', 'sub', 'vendor']);
    expect(listDir(join(dir, 'nope'))).toStrictEqual([]);
    expect(errors).toStrictEqual(['numa_node: malformed value "x1"', 'absent2: missing']);
  });

  test.each([...LOCKING_ATTRS])('%s (its read takes the device lock) is never opened', (attr) => {
    execFileSync('mkfifo', [join(dir, 'sub', attr)]);
    const errors: string[] = [];
    expect(new AttrReader(dir, errors).sub('sub').text(attr)).toBeUndefined();
    expect(errors).toStrictEqual([`sub/${attr}: not read: reading it takes the device lock, which a blocked write on the device holds`]);
  });
});

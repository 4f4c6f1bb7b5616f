// A suite's image is the code of its own checkout, whatever other checkouts build meanwhile.
//
// The agent upgrade test (chart-real-node.test.ts) once saw the pool's allocatable drop to 0 during a
// hand-over. The kubelet's log showed the old agent stopping with no detach Register at all, and the
// image on that run's node held another checkout's build (one with the detach taken out): the
// archives were written to one path per image name in the machine's cache, and the suite imports
// them only after waiting for the machine's kubelet lock, minutes later under load; a run in another
// checkout had rebuilt the same names in between. This replays that order deterministically: this
// run builds, "another checkout" builds the same image name with other contents, then this run reads
// its archive, which must still hold its own build.
import { jest } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { realNodeSkipReason } from '../node/node.js';
import { archiveRevision, buildImage } from './real-node-support.js';

jest.setTimeout(600_000);

const skipReason = realNodeSkipReason();
const suite = skipReason ? describe.skip : describe;
if (skipReason) console.log(`image-build-isolation: skipped: ${skipReason}`);

suite(`image builds of concurrent runs${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  test('a build of the same image name by another run leaves this run\'s archive as it built it', async () => {
    const mine = mkdtempSync(join(tmpdir(), 'vio-images-'));
    const theirs = mkdtempSync(join(tmpdir(), 'vio-images-'));
    dirs.push(mine, theirs);
    const tag = 'e2e-isolation';
    const ours = await buildImage(tag, `isolation-ours-${mine.slice(-6)}`, mine);
    expect(await archiveRevision(ours)).toBe(`isolation-ours-${mine.slice(-6)}`);
    const other = await buildImage(tag, `isolation-theirs-${theirs.slice(-6)}`, theirs);
    expect(await archiveRevision(other)).toBe(`isolation-theirs-${theirs.slice(-6)}`);
    // What this run imports into its node afterwards.
    expect(other).not.toBe(ours);
    expect(await archiveRevision(ours)).toBe(`isolation-ours-${mine.slice(-6)}`);
  });
});

// Durable replacement of small state files, the way the kubelet's checkpoint manager and etcd do it:
// write a temp file in the same folder, fsync it, rename it over the target, fsync the folder. A
// crash or power loss then leaves the old file or the new one, never an empty or half-written one.
// Plus the two things every record on the node needs around that: a checksum that tells a damaged
// file from a valid one, and a copy of a damaged file kept before it is replaced.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, fsyncSync, linkSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** fsyncs a folder so that a rename (or a new entry) in it survives a power loss. */
export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch (err) {
    // A few file systems cannot fsync a folder (EINVAL) or refuse it (ENOTSUP); nothing more to do there.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Replaces `file` with `data` durably: temp file in the same folder (unique name, so two writers
 * never share one), fsync, rename, fsync of the folder. Creates the folder. Throws on any failure,
 * leaving the old file in place and no temp file behind. With `sync: false` the two fsyncs are
 * left out: the replacement is still atomic and survives the writer's crash (it is in the page
 * cache), but not a power loss until `syncFile` has run.
 */
export function writeFileDurable(file: string, data: string | Uint8Array, opts: { mode?: number; sync?: boolean } = {}): void {
  const sync = opts.sync ?? true;
  const dir = dirname(file);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${basename(file)}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx', opts.mode ?? 0o600);
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    if (sync) fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, file);
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  if (sync) fsyncDir(dir);
}

/**
 * What `writeFileDurable(..., { sync: false })` left out, off the caller's thread: fsync of the
 * file, then of its folder. Rejects on failure (a folder that cannot be fsynced is no failure).
 */
export async function syncFile(file: string): Promise<void> {
  const f = await open(file, 'r');
  try {
    await f.sync();
  } finally {
    await f.close();
  }
  const d = await open(dirname(file), 'r');
  try {
    await d.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
  } finally {
    await d.close();
  }
}

/**
 * Keeps a damaged record before it is replaced: `<file>.corrupt-<UTC time>` beside it, as a hard
 * link (needs no read permission, copies nothing) or, where links are refused, a copy. Returns the
 * path of the copy, or undefined when the file no longer exists; throws when neither works (the
 * caller must then not replace the file).
 */
export function keepCorruptCopy(file: string, now: Date = new Date()): string | undefined {
  const copy = `${file}.corrupt-${now.toISOString().replace(/[:.]/g, '-')}`;
  try {
    linkSync(file, copy);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !existsSync(file)) return undefined;
    if (code === 'EEXIST') return copy; // kept already (same millisecond)
    copyFileSync(file, copy);
  }
  fsyncDir(dirname(file));
  return copy;
}

const CHECKSUM_KEY = 'checksum';

function digest(text: string): string {
  return `sha256:${createHash('sha256').update(text).digest('hex')}`;
}

/**
 * JSON text of `doc` with a `checksum` field (sha256 of the compact JSON of everything else), one
 * space of indentation so an admin can still read it.
 */
export function encodeChecked(doc: Record<string, unknown>): string {
  const { [CHECKSUM_KEY]: _drop, ...rest } = doc;
  return `${JSON.stringify({ ...rest, [CHECKSUM_KEY]: digest(JSON.stringify(rest)) }, null, 1)}\n`;
}

/**
 * Parses text written by {@link encodeChecked}. A file without a checksum (written before there was
 * one) is accepted; a wrong checksum, non-JSON or a non-object is refused with the reason.
 */
export function decodeChecked(text: string): { ok: true; doc: Record<string, unknown>; checked: boolean } | { ok: false; message: string } {
  if (text.trim() === '') return { ok: false, message: 'the file is empty' };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { ok: false, message: `not JSON: ${(err as Error).message}` };
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return { ok: false, message: 'not a JSON object' };
  const { [CHECKSUM_KEY]: sum, ...rest } = doc as Record<string, unknown>;
  if (sum === undefined) return { ok: true, doc: rest, checked: false };
  if (typeof sum !== 'string' || sum !== digest(JSON.stringify(rest))) return { ok: false, message: 'checksum mismatch (the file was damaged or edited)' };
  return { ok: true, doc: rest, checked: true };
}

// Tolerant sysfs readers: every failure becomes a message in an error list, never an exception.
//
// Synchronous on purpose. Sysfs attributes are tiny in-memory files: on a loaded 2-core machine
// 20,000 attribute reads took ~0.25 s with readFileSync, ~4-5 s (and 18x the CPU) with
// fs/promises readFile awaited one by one as a scan reads them, and ~0.7-1 s 20 at a time; the
// scan runs on every device event, so async reads would cost the start and health targets. Going
// async would not make a read that blocks in the kernel harmless either: it would park one of the
// agent's four libuv threads (four such reads stall every file operation of the agent, and the
// process cannot exit while one is parked, as libuv joins its threads at exit) and the scan would
// still never finish. The protection is not reading what can block: an attribute whose `show`
// takes the device lock waits for as long as a blocked write on that device holds it (a
// `sriov_numvfs` read sat in D state for minutes under a stuck numvfs write in test/kernel), so
// those attributes are refused here (LOCKING_ATTRS) and the scan derives the facts from links.
import { closeSync, constants, fstatSync, openSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';

function errCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Attributes whose `show` takes the device lock (`device_lock()` in drivers/pci/pci-sysfs.c and
 * iov.c): a blocked unbind or `sriov_numvfs` write holds that lock until the VMM lets go, so a read
 * would block the agent's thread with it. AttrReader records them as not read instead.
 */
export const LOCKING_ATTRS: ReadonlySet<string> = new Set(['sriov_numvfs', 'driver_override']);

/**
 * The most an attribute may hold. A sysfs text attribute is at most one page (`show` fills a
 * PAGE_SIZE buffer); a larger regular file is not a sysfs attribute (a bad mount, a test tree).
 */
export const MAX_ATTR_BYTES = 64 * 1024;

/**
 * Reads a text attribute without ever blocking in open(2) or read(2): opened O_NONBLOCK (a FIFO in
 * place of an attribute would otherwise wait for a writer for ever, freezing the agent's thread),
 * and only a regular file of at most {@link MAX_ATTR_BYTES} is read. Sysfs attributes are regular
 * files and kernfs ignores O_NONBLOCK for them. Throws an Error with a `code` (ENOENT, EISDIR, ...)
 * or, for what is not an attribute, a message saying what it is.
 */
export function readAttrSync(file: string): string {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(st.isFIFO() ? 'not read: a FIFO, not an attribute' : st.isDirectory() ? 'EISDIR' : 'not read: not a regular file');
    if (st.size > MAX_ATTR_BYTES) throw new Error(`not read: ${st.size} bytes, more than an attribute holds (${MAX_ATTR_BYTES})`);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** Removes exactly one trailing newline, as sysfs `show` functions print one. */
export function chompNewline(s: string): string {
  return s.endsWith('\n') ? s.slice(0, -1) : s;
}

/**
 * Reads attributes and links of one sysfs folder, collecting problems in `errors` (each message
 * names the attribute). Missing optional attributes are not errors; unreadable ones are.
 */
export class AttrReader {
  readonly dir: string;
  readonly errors: string[];
  private readonly label: string;

  constructor(dir: string, errors: string[], label = '') {
    this.dir = dir;
    this.errors = errors;
    this.label = label;
  }

  private name(attr: string): string {
    return this.label ? `${this.label}/${attr}` : attr;
  }

  /** A child reader for a subfolder; its messages are prefixed with the subfolder path. */
  sub(rel: string): AttrReader {
    return new AttrReader(path.join(this.dir, rel), this.errors, this.name(rel));
  }

  /** Records a problem with `attr`. */
  fail(attr: string, message: string): void {
    this.errors.push(`${this.name(attr)}: ${message}`);
  }

  /** The attribute's text minus one trailing newline; undefined when absent (an error if `required`). */
  text(attr: string, required = false): string | undefined {
    if (LOCKING_ATTRS.has(path.basename(attr))) {
      this.fail(attr, 'not read: reading it takes the device lock, which a blocked write on the device holds');
      return undefined;
    }
    try {
      return chompNewline(readAttrSync(path.join(this.dir, attr)));
    } catch (err) {
      const code = errCode(err);
      if (code === 'ENOENT') {
        if (required) this.fail(attr, 'missing');
      } else {
        this.fail(attr, `unreadable (${code ?? errText(err)})`);
      }
      return undefined;
    }
  }

  /** Parses a required or optional attribute strictly with `re`; a mismatch is recorded and yields undefined. */
  matched(attr: string, re: RegExp, required = false): RegExpExecArray | undefined {
    const raw = this.text(attr, required);
    if (raw === undefined) return undefined;
    const m = re.exec(raw);
    if (!m) this.fail(attr, `malformed value ${JSON.stringify(raw.slice(0, 64))}`);
    return m ?? undefined;
  }

  /** A decimal integer attribute (optionally signed). */
  int(attr: string, required = false): number | undefined {
    const m = this.matched(attr, /^(-?\d{1,15})$/, required);
    return m ? Number(m[1]) : undefined;
  }

  /** The basename of a symlink's target; undefined when the link is absent. */
  linkBase(attr: string): string | undefined {
    const target = this.link(attr);
    return target === undefined ? undefined : path.basename(target);
  }

  /** A symlink's raw target; undefined when absent; recorded when the entry is not a link. */
  link(attr: string): string | undefined {
    try {
      return readlinkSync(path.join(this.dir, attr));
    } catch (err) {
      const code = errCode(err);
      if (code !== 'ENOENT') this.fail(attr, `unreadable link (${code ?? errText(err)})`);
      return undefined;
    }
  }

  /** Names in a subfolder, sorted; empty when absent. */
  list(rel = '.'): string[] {
    return listDir(path.join(this.dir, rel), (m) => this.fail(rel, m));
  }
}

/** Sorted entries of `dir`; [] when it does not exist; other failures go to `onError`. */
export function listDir(dir: string, onError?: (message: string) => void): string[] {
  try {
    const names = readdirSync(dir);
    return names.sort();
  } catch (err) {
    const code = errCode(err);
    if (code !== 'ENOENT' && code !== 'ENOTDIR') onError?.(`unlistable (${code ?? errText(err)})`);
    return [];
  }
}

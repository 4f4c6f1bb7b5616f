// Tolerant sysfs readers: every failure becomes a message in an error list, never an exception.
import { readFile, readdir, readlink } from 'node:fs/promises';
import path from 'node:path';

function errCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
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
  async text(attr: string, required = false): Promise<string | undefined> {
    try {
      return chompNewline(await readFile(path.join(this.dir, attr), 'utf8'));
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
  async matched(attr: string, re: RegExp, required = false): Promise<RegExpExecArray | undefined> {
    const raw = await this.text(attr, required);
    if (raw === undefined) return undefined;
    const m = re.exec(raw);
    if (!m) this.fail(attr, `malformed value ${JSON.stringify(raw.slice(0, 64))}`);
    return m ?? undefined;
  }

  /** A decimal integer attribute (optionally signed). */
  async int(attr: string, required = false): Promise<number | undefined> {
    const m = await this.matched(attr, /^(-?\d{1,15})$/, required);
    return m ? Number(m[1]) : undefined;
  }

  /** The basename of a symlink's target; undefined when the link is absent. */
  async linkBase(attr: string): Promise<string | undefined> {
    const target = await this.link(attr);
    return target === undefined ? undefined : path.basename(target);
  }

  /** A symlink's raw target; undefined when absent; recorded when the entry is not a link. */
  async link(attr: string): Promise<string | undefined> {
    try {
      return await readlink(path.join(this.dir, attr));
    } catch (err) {
      const code = errCode(err);
      if (code !== 'ENOENT') this.fail(attr, `unreadable link (${code ?? errText(err)})`);
      return undefined;
    }
  }

  /** Names in a subfolder, sorted; empty when absent. */
  async list(rel = '.'): Promise<string[]> {
    return listDir(path.join(this.dir, rel), (m) => this.fail(rel, m));
  }
}

/** Sorted entries of `dir`; [] when it does not exist; other failures go to `onError`. */
export async function listDir(dir: string, onError?: (message: string) => void): Promise<string[]> {
  try {
    const names = await readdir(dir);
    return names.sort();
  } catch (err) {
    const code = errCode(err);
    if (code !== 'ENOENT' && code !== 'ENOTDIR') onError?.(`unlistable (${code ?? errText(err)})`);
    return [];
  }
}

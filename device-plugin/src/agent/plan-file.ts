// Standalone mode's plan source: the plan from a file (YAML or JSON), re-read when it changes. Only
// standalone mode loads this module (main.ts imports it when --plan-file is given): `yaml` costs
// about 20 ms and 2 MiB of every cluster-mode start (docs/design-decisions.md, "Agent start-up").
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { Logger } from '../log.js';
import type { VirtualIONodeSpec } from '../model.js';
import { isObject, validatePlan, type PlanSource, type PlanState } from './plan.js';

const EMPTY_PLAN_HINT = 'an empty plan must say so explicitly: "pools: []"';

/**
 * Parses plan file text (YAML is a superset of JSON). Stricter than {@link validatePlan} about what
 * counts as a plan: the file must hold a document with an explicit `pools` list (in the document or
 * in its `spec`). An empty or whitespace-only file, a file of comments only, `pools:` without a value
 * or anything that does not parse is an error, never an empty plan: a half-written or truncated file
 * (an editor's save, a writer that crashed, a read racing a non-atomic write) would otherwise read as
 * "no pools" and release every slice.
 */
export function parsePlanText(text: string): { ok: true; spec: VirtualIONodeSpec } | { ok: false; message: string } {
  if (text.trim() === '') return { ok: false, message: `the file is empty; ${EMPTY_PLAN_HINT}` };
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    return { ok: false, message: `cannot parse plan (incomplete or not YAML/JSON): ${(err as Error).message}` };
  }
  if (doc === null || doc === undefined) return { ok: false, message: `the file holds no document (only comments or "---"); ${EMPTY_PLAN_HINT}` };
  if (!isObject(doc)) return { ok: false, message: 'plan must be an object with a "pools" list' };
  const whole = doc.kind === 'VirtualIONode' || 'spec' in doc;
  const spec = whole ? doc.spec : doc;
  if (!isObject(spec) || spec.pools === undefined || spec.pools === null) {
    return { ok: false, message: `no "pools" list${whole ? ' in spec' : ''} (the file is incomplete or not a plan); ${EMPTY_PLAN_HINT}` };
  }
  return validatePlan(doc);
}

/** What tells one version of the plan file from another without reading it. */
function stampOf(file: string): string {
  try {
    const st = statSync(file);
    return `${st.ino}:${st.mtimeMs}:${st.size}`;
  } catch (err) {
    return `missing:${(err as NodeJS.ErrnoException).code ?? ''}`;
  }
}

/**
 * Standalone mode: the plan from a file, re-read on change (fs.watch on its folder + a 1 s stat poll).
 * A file that is missing, empty or does not parse is an error state: the caller keeps serving the
 * last valid plan (or, with none yet, removes nothing) and reports the error. Write the file
 * atomically (a temp file renamed over it): a truncated YAML file cut exactly between two pool
 * entries still parses and cannot be told from a shorter plan.
 */
export class FilePlanSource implements PlanSource {
  private state: PlanState;
  private lastStamp = '';
  private readonly log: Logger;

  constructor(
    private readonly file: string,
    logger: Logger,
    private readonly pollMs = 1000,
  ) {
    this.log = logger.child({ component: 'plan-file', file });
    this.state = { kind: 'none', message: `plan file ${file} not read yet` };
  }

  current(): PlanState {
    return this.state;
  }

  /** Reads the file when its stamp changed; returns true when the state changed. */
  reload(): boolean {
    const stamp = stampOf(this.file);
    if (stamp === this.lastStamp) return false;
    this.lastStamp = stamp;
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      this.state = { kind: 'error', message: `cannot read plan file ${this.file}: ${(err as Error).message}` };
      this.log.error(this.state.message);
      return true;
    }
    const r = parsePlanText(text);
    if (!r.ok && stampOf(this.file) !== stamp) {
      // Changed while it was read (a writer that does not rename into place): read it again later.
      this.lastStamp = '';
      return false;
    }
    if (r.ok) {
      this.state = { kind: 'ok', spec: r.spec };
      this.log.info({ pools: (r.spec.pools ?? []).map((p) => p.name) }, 'plan loaded');
    } else {
      this.state = { kind: 'error', message: `invalid plan file ${this.file}: ${r.message}` };
      this.log.error(this.state.message);
    }
    return true;
  }

  async run(signal: AbortSignal, onChange: () => void): Promise<void> {
    const check = (): void => {
      if (this.reload()) onChange();
    };
    check();
    let fsw: FSWatcher | undefined;
    try {
      fsw = watch(dirname(this.file), { persistent: false }, (_ev, name) => {
        if (!name || name === basename(this.file)) check();
      });
      fsw.on('error', () => fsw?.close());
    } catch {
      /* polling only */
    }
    const timer = setInterval(check, this.pollMs);
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    clearInterval(timer);
    fsw?.close();
  }
}

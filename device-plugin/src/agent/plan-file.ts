// Standalone mode's plan source: the plan from a file (YAML or JSON), re-read when it changes. Only
// standalone mode loads this module (main.ts imports it when --plan-file is given), and the YAML
// parser only once a file is not JSON: `yaml` costs about 2 MiB and, in the emulated guest, ~0.1 s
// of a start (docs/design-decisions.md, "Agent start-up").
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from '../log.js';
import type { VirtualIONodeSpec } from '../model.js';
import { isObject, validatePlan, type PlanSource, type PlanState } from './plan.js';

const EMPTY_PLAN_HINT = 'an empty plan must say so explicitly: "pools: []"';

export type YamlParse = (text: string) => unknown;
let yamlParse: YamlParse | undefined;

/** The YAML parser, imported on first use: a JSON plan file never needs it. */
export async function loadYaml(): Promise<YamlParse> {
  yamlParse ??= (await import('yaml')).parse as YamlParse;
  return yamlParse;
}

/** The document of a text that is JSON, or undefined when it is not (then it may still be YAML). */
function parseJson(text: string): { doc: unknown } | undefined {
  try {
    return { doc: JSON.parse(text) as unknown };
  } catch {
    return undefined;
  }
}

/**
 * Parses plan file text: JSON with `JSON.parse`, anything else with the YAML parser (YAML is a
 * superset of JSON, so the result is the one YAML would give; a JSON object's duplicate key keeps its
 * last value, as in every JSON reader, where the YAML parser refuses the file). `parseYaml` is
 * {@link loadYaml}'s parser; without it a text that is not JSON is not parsed (`needsYaml`: the
 * caller loads the parser and asks again). Stricter than {@link validatePlan} about what counts as a
 * plan: the file must hold a document with an explicit `pools` list (in the document or in its
 * `spec`). An empty or whitespace-only file, a file of comments only, `pools:` without a value or
 * anything that does not parse is an error, never an empty plan: a half-written or truncated file (an
 * editor's save, a writer that crashed, a read racing a non-atomic write) would otherwise read as "no
 * pools" and release every slice.
 */
export function parsePlanText(text: string, parseYaml?: YamlParse): { ok: true; spec: VirtualIONodeSpec } | { ok: false; message: string; needsYaml?: true } {
  if (text.trim() === '') return { ok: false, message: `the file is empty; ${EMPTY_PLAN_HINT}` };
  let doc: unknown;
  const json = parseJson(text);
  if (json) doc = json.doc;
  else if (!parseYaml) return { ok: false, needsYaml: true, message: 'not JSON, and the YAML parser is not loaded' };
  else {
    try {
      doc = parseYaml(text);
    } catch (err) {
      return { ok: false, message: `cannot parse plan (incomplete or not YAML/JSON): ${(err as Error).message}` };
    }
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

  /**
   * Reads the file when its stamp changed; returns true when the state changed. Loads the YAML parser
   * first when the file is not JSON. Calls must not overlap ({@link run} chains them).
   */
  async reload(): Promise<boolean> {
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
    let r = parsePlanText(text, yamlParse);
    if (!r.ok && r.needsYaml) r = parsePlanText(text, await loadYaml());
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
    // One reload at a time, in order: one waiting for the YAML parser must not land after a later one.
    let chain = Promise.resolve();
    const check = (): void => {
      chain = chain.then(async () => {
        if (await this.reload()) onChange();
      }).catch((err: unknown) => this.log.error({ err }, 'plan file check failed'));
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
    await chain;
  }
}

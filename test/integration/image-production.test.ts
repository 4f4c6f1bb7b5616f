// The Dockerfile's promises, checked without a container engine (the image itself is built with
// BuildKit by scripts/build-image.sh and run on a real node by chart-real-node.test.ts): they are
// checked against the chart and package.json, and its install steps are repeated in a temp folder
// (`npm run build`'s compiler and bundler, then the runtime stage's files: the bundles, package.json
// and the .proto sources) to prove that both entrypoints start from what the image holds, with no
// node_modules at all.
import { jest } from '@jest/globals';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import vm from 'node:vm';
import YAML from 'yaml';
import { REPO_ROOT } from '../cluster/control-plane.js';
import { CHART_DIR, only, renderChart } from './chart-support.js';

jest.setTimeout(600_000);

const run = promisify(execFile);
const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  version: string; dependencies: Record<string, string>; devDependencies: Record<string, string>;
};
const chart = YAML.parse(readFileSync(join(CHART_DIR, 'Chart.yaml'), 'utf8')) as { appVersion: string };
const values = YAML.parse(readFileSync(join(CHART_DIR, 'values.yaml'), 'utf8')) as { image: { repository: string; tag: string } };

/** Dockerfile instructions of the last stage (the runtime image). */
function runtimeStage(): string[] {
  const lines = dockerfile.replace(/\\\n\s*/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const lastFrom = lines.map((l, i) => (l.startsWith('FROM ') ? i : -1)).filter((i) => i >= 0).pop() ?? 0;
  return lines.slice(lastFrom);
}

function argDefault(name: string): string | undefined {
  return dockerfile.match(new RegExp(`^ARG ${name}=(.+)$`, 'm'))?.[1]?.trim();
}

function label(name: string): string | undefined {
  return runtimeStage().join('\n').match(new RegExp(`${name.replace(/\./g, '\\.')}="([^"]*)"`))?.[1];
}

describe('Dockerfile', () => {
  test('multi-stage: Node 24 build stages and a distroless Node 24 runtime', () => {
    const froms = [...dockerfile.matchAll(/^FROM (\S+)(?: AS (\w+))?/gm)].map((m) => [m[1], m[2]]);
    expect(froms).toEqual([
      ['node:${NODE_VERSION}-bookworm-slim', 'build'], ['${RUNTIME_IMAGE}', 'runtime'], ['node:${NODE_VERSION}-bookworm-slim', 'tools'], ['${RUNTIME_IMAGE}', undefined],
    ]);
    expect(argDefault('NODE_VERSION')).toMatch(/^24\./);
    expect(argDefault('RUNTIME_IMAGE')).toBe('gcr.io/distroless/nodejs24-debian12:nonroot');
  });

  test("the runtime stage gets iproute2's ip and nvme-cli's nvme from Debian 12 (run in the built image by chart-real-node)", () => {
    expect(dockerfile).toMatch(/^ && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 nvme-cli /m);
    expect(runtimeStage()).toContain('COPY --from=tools /out/ /');
    // No VIO_IP_CLI / VIO_NVME_CLI in the image: the agent's defaults (`ip`, `nvme`) find them on PATH.
    expect(dockerfile).not.toMatch(/^ENV .*VIO_(IP|NVME)_CLI/m);
  });

  test('the bundles and no node_modules, non-root user, node entrypoint, OCI labels', () => {
    const stage = runtimeStage();
    expect(stage).toContain('COPY --from=build /src/dist/image/ ./');
    expect(stage.filter((l) => l.includes('node_modules'))).toEqual([]);
    expect(stage).toContain('USER 65532:65532');
    expect(stage).toContain('ENTRYPOINT ["/nodejs/bin/node"]');
    expect(stage).toContain('CMD ["/app/operator/main.js"]');
    expect(stage).toContain('WORKDIR /app');
    for (const l of ['title', 'description', 'version', 'revision', 'licenses', 'source']) {
      expect(label(`org.opencontainers.image.${l}`)).toBeTruthy();
    }
    expect(label('org.opencontainers.image.licenses')).toBe((JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { license: string }).license);
  });

  test('the version and repository match package.json and the chart defaults', () => {
    expect(argDefault('VERSION')).toBe(pkg.version);
    expect(chart.appVersion).toBe(pkg.version);
    expect(values.image.tag).toBe(''); // i.e. the appVersion
    expect(label('dev.virtualio.image.repository')).toBe(values.image.repository);
  });

  test("the chart's entrypoints, user and image match the Dockerfile", async () => {
    const objs = await renderChart('img', 'img');
    const op = (only(objs, 'Deployment') as unknown as { spec: { template: { spec: { containers: { image: string; args: string[]; securityContext: { runAsUser: number } }[] } } } }).spec.template.spec.containers[0]!;
    const agent = (only(objs, 'DaemonSet') as unknown as { spec: { template: { spec: { containers: { image: string; args: string[] }[] } } } }).spec.template.spec.containers[0]!;
    expect(op.image).toBe(`${values.image.repository}:${pkg.version}`);
    expect(agent.image).toBe(op.image);
    expect(op.args[0]).toBe('/app/operator/main.js');
    expect(agent.args[0]).toBe('/app/agent/main.js');
    // The image's user is the last USER of the runtime stage (an earlier one only runs a build step).
    expect(`USER ${op.securityContext.runAsUser}:${op.securityContext.runAsUser}`).toBe(runtimeStage().filter((l) => l.startsWith('USER ')).pop());
  });

  test('.dockerignore lets in every path the Dockerfile copies from the context, and keeps node_modules and dist out', () => {
    const ignore = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    expect(ignore[0]).toBe('*');
    const allowed = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/\*\*$/, ''));
    const copied = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(/\s+/)).map((p) => p.replace(/\/$/, ''));
    for (const src of copied) {
      expect({ src, allowed: allowed.some((a) => src === a || src.startsWith(`${a}/`)) }).toEqual({ src, allowed: true });
      expect(existsSync(join(REPO_ROOT, src))).toBe(true);
    }
    expect(ignore).toEqual(expect.arrayContaining(['node_modules', 'dist']));
  });
});

describe('the runtime stage\'s files (the Dockerfile steps, without a container engine)', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'vio-image-'));
  const app = join(tmp, 'app');

  beforeAll(async () => {
    // build stage: `npm run build` is tsc, then scripts/bundle.mjs; into the temp folder instead of ./dist
    const dist = join(tmp, 'dist');
    await run(process.execPath, [join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', dist],
      { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 });
    await run(process.execPath, [join(REPO_ROOT, 'scripts/bundle.mjs'), '--dist', dist], { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 });
    // runtime stage: package.json and the bundles (the kubelet APIs are inside: no .proto file is copied)
    expect(runtimeStage().filter((l) => /^COPY (?!--from).*proto/.test(l))).toEqual([]);
    cpSync(join(REPO_ROOT, 'package.json'), join(app, 'package.json'));
    cpSync(join(dist, 'image'), app, { recursive: true });
  });

  /** ws's optional native helpers: required inside try/catch (ws works without them), never installed. */
  const WS_OPTIONAL = ['bufferutil', 'utf-8-validate'];

  test('each bundle imports only Node\'s own modules and its own chunks: nothing from node_modules', () => {
    expect(existsSync(join(app, 'node_modules'))).toBe(false);
    const foreign: string[] = [];
    let files = 0;
    let specs = 0;
    for (const program of ['agent', 'operator']) {
      for (const f of readdirSync(join(app, program)).filter((n) => n.endsWith('.js'))) {
        files++;
        const text = readFileSync(join(app, program, f), 'utf8');
        // Static imports as Node's own parser reads them (the bundle is minified: no line structure
        // to rely on); `import("x")` for a lazy chunk and esbuild's `__require("x")` for a CommonJS
        // package's require() of something not bundled.
        const statics = new vm.SourceTextModule(text, { identifier: f }).dependencySpecifiers;
        const dynamics = [...text.matchAll(/\b(?:import|__require)\("([^"]+)"\)/g)].map((m) => m[1]!);
        specs += statics.length + dynamics.length;
        for (const spec of [...statics, ...dynamics]) {
          if (!spec.startsWith('./') && !spec.startsWith('node:') && !builtinModules.includes(spec) && !WS_OPTIONAL.includes(spec)) foreign.push(`${program}/${f}: ${spec}`);
        }
      }
    }
    expect(files).toBeGreaterThanOrEqual(3);
    expect(specs).toBeGreaterThan(20); // the parse found the imports (node:fs, http2, the chunks …)
    expect(foreign).toEqual([]);
    const size = du(app);
    process.stderr.write(`[image] /app: ${(size / 1024 / 1024).toFixed(1)} MiB in ${files} bundle files, no node_modules\n`);
  });

  test('THIRD-PARTY-LICENSES.txt carries the license of every runtime dependency', () => {
    const text = readFileSync(join(app, 'THIRD-PARTY-LICENSES.txt'), 'utf8');
    for (const dep of Object.keys(pkg.dependencies)) {
      const { version } = JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', dep, 'package.json'), 'utf8')) as { version: string };
      expect({ dep, listed: text.includes(`\n${dep} ${version}\n`) }).toEqual({ dep, listed: true });
    }
    expect(text).toMatch(/Apache License/);
    expect(text).toMatch(/MIT License|Permission is hereby granted/);
  });

  test.each([
    ['operator', 'operator/main.js', '--leader-elect'],
    ['agent', 'agent/main.js', '--node-name'],
  ])('the %s entrypoint starts from the image\'s files (--help)', async (_name, entry, flag) => {
    const { stdout, stderr } = await run(process.execPath, [join(app, entry), '--help'], {
      cwd: app, env: { PATH: process.env.PATH ?? '', NODE_ENV: 'production' },
    });
    expect(`${stdout}${stderr}`).toContain(flag);
  });

  test('the compile cache the image makes at build time is what each start reads (nothing left to compile)', async () => {
    // The runtime stage's RUN lines (scripts/warm-compile-cache.mjs), then a start with Node's
    // compile-cache log: every module read from the cache, none compiled afresh.
    const warm = runtimeStage().filter((l) => l.startsWith('RUN ') && l.includes('warm-compile-cache.mjs'));
    expect(warm).toHaveLength(2);
    expect(runtimeStage().filter((l) => /^ENV .*\bNODE_COMPILE_CACHE=\/app\/\.node-compile-cache$/.test(l))).toHaveLength(1);
    const cache = mkdtempSync(join(tmpdir(), 'vio-compile-cache-'));
    const env = { PATH: process.env.PATH ?? '', NODE_ENV: 'production', NODE_COMPILE_CACHE: cache };
    await run(process.execPath, [join(REPO_ROOT, 'scripts/warm-compile-cache.mjs'), join(app, 'agent')], { cwd: app, env });
    const { stderr } = await run(process.execPath, [join(app, 'agent/main.js'), '--help'], {
      cwd: app, env: { ...env, NODE_DEBUG_NATIVE: 'COMPILE_CACHE' }, maxBuffer: 16 * 1024 * 1024,
    });
    const lines = stderr.split('\n');
    const accepted = lines.filter((l) => l.includes('was accepted')).length;
    const compiled = lines.filter((l) => /was not initialized|was rejected|mismatch/.test(l));
    process.stderr.write(`[image] agent start from the warmed compile cache: ${accepted} modules read from it, ${compiled.length} compiled\n`);
    expect(accepted).toBeGreaterThanOrEqual(2); // main.js and the chunk it imports
    expect(compiled).toEqual([]);
    rmSync(cache, { recursive: true, force: true });
  });
});

function du(dir: string): number {
  let total = 0;
  for (const d of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (d.isFile()) total += statSync(join(d.parentPath, d.name)).size;
  }
  return total;
}

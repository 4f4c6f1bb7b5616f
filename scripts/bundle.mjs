#!/usr/bin/env node
// Bundles the two programs the image ships (after `tsc`, from dist/) with esbuild, each into a folder
// of a few ES modules with their dependencies inside:
//   dist/image/agent/     main.js (entry), write-child.js (the sysfs write helper it spawns), chunks
//   dist/image/operator/  main.js (entry), chunks
//   dist/image/THIRD-PARTY-LICENSES.txt   the license of every package bundled
// The image copies dist/image/ to /app/ with the .proto sources and package.json, and no node_modules
// (Dockerfile). Why: an agent start read ~600 module files before its first log line, 3.8 s of a
// start under QEMU's emulation against 0.4 s from a bundle (docs/design-decisions.md, "Agent
// start-up"). Modules a program imports lazily (client-node in the agent's cluster mode, the YAML
// parser in standalone mode, the DRA driver) stay lazy: code splitting puts them in chunks of their
// own. Whitespace and syntax are minified, identifiers are not: stack traces keep their function
// names. Minified, an agent start on the host took 220 instead of 260 ms to registration and its
// VmRSS was 1–2 MiB lower (less source to parse and keep; test/bench/agent-start.ts).
//
//   node scripts/bundle.mjs [--dist <dir>]   (npm run build runs it after tsc; <dir>: tsc's output
//                                             folder, default dist/; the bundles go to <dir>/image/)
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const distFlag = process.argv.indexOf('--dist');
const dist = resolve(root, distFlag >= 0 ? process.argv[distFlag + 1] : 'dist');
const out = join(dist, 'image');

const PROGRAMS = {
  agent: { main: join(dist, 'device-plugin/src/main.js'), 'write-child': join(dist, 'device-plugin/src/sysfs/write-child.js') },
  operator: { main: join(dist, 'operator/src/main.js') },
};

rmSync(out, { recursive: true, force: true });
const packages = new Set();
for (const [name, entryPoints] of Object.entries(PROGRAMS)) {
  const result = await build({
    absWorkingDir: root,
    nodePaths: [join(root, 'node_modules')], // for a --dist outside the checkout
    entryPoints,
    outdir: join(out, name),
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node24',
    // CommonJS dependencies call require() for Node's own modules; an ES module has none of its own.
    banner: { js: "import { createRequire as __vioCreateRequire } from 'node:module'; const require = __vioCreateRequire(import.meta.url);" },
    legalComments: 'none', // the licenses are collected whole below
    minifyWhitespace: true,
    minifySyntax: true,
    metafile: true,
    logLevel: 'warning',
  });
  for (const input of Object.keys(result.metafile.inputs)) {
    const m = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m) packages.add(join(input.slice(0, m.index + m[0].length - 1)));
  }
}

/** The license text a package ships (LICENSE, LICENCE, COPYING, any extension), or its package.json's field. */
function licenseOf(dir) {
  const file = readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f));
  if (file) return readFileSync(join(dir, file), 'utf8').trim();
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  return `License: ${pkg.license ?? 'not stated'} (the package ships no license file)`;
}

const texts = [...packages].sort().map((dir) => {
  const abs = join(root, dir);
  const pkg = JSON.parse(readFileSync(join(abs, 'package.json'), 'utf8'));
  return `${pkg.name} ${pkg.version}\n${'-'.repeat(72)}\n${licenseOf(abs)}\n`;
});
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'THIRD-PARTY-LICENSES.txt'), `Packages bundled into the agent and the operator (scripts/bundle.mjs)\n\n${texts.join('\n')}`);
if (!existsSync(join(out, 'agent', 'write-child.js'))) throw new Error(`bundle: ${join(out, 'agent', 'write-child.js')} is missing`);
process.stderr.write(`bundle: ${relative(root, out)}/ (agent, operator; ${packages.size} packages bundled)\n`);

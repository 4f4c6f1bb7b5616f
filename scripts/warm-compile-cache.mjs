// Fills Node's on-disk compile cache (NODE_COMPILE_CACHE, module.enableCompileCache) at image build
// time, so that every start of the agent and the operator reads V8's compiled code of their modules
// and dependencies instead of parsing and compiling them again (docs/design-decisions.md, "Agent
// start-up"). The image's root filesystem is read-only in the chart, so the cache must be complete
// when the image is built; Node only reads it then (entries that match are never rewritten).
//
//   NODE_COMPILE_CACHE=<dir> node scripts/warm-compile-cache.mjs [--share-with <uid>] <folder>...
//
// Each folder is walked for .js files (tests excluded). Program entry points (a file that acts when
// it is loaded: main.js, the sysfs write helper) run as child processes with `--help`, which loads
// their whole static import graph and exits; every other module is imported here, which also covers
// the modules the programs load only in some modes (client-node in cluster mode, the DRA driver).
// The cache folder name holds Node's version, its flags' hash and the user id: run this as the user
// the program runs as, with the Node binary it runs with. `--share-with <uid>` (as root) makes <dir>
// itself owned by that user, so that a later run as that user can add its own folder beside root's.
import { execFileSync } from 'node:child_process';
import { chownSync, mkdirSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const ENTRY_POINTS = new Set(['main.js', 'write-child.js']);

if (!process.env.NODE_COMPILE_CACHE) {
  process.stderr.write('warm-compile-cache: NODE_COMPILE_CACHE is not set\n');
  process.exit(2);
}

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'testing' ? [] : walk(p);
    return e.name.endsWith('.js') && !e.name.endsWith('.test.js') ? [p] : [];
  });
}

const args = process.argv.slice(2);
const share = args.indexOf('--share-with');
if (share >= 0) {
  const uid = Number(args[share + 1]);
  mkdirSync(process.env.NODE_COMPILE_CACHE, { recursive: true });
  chownSync(process.env.NODE_COMPILE_CACHE, uid, uid);
  args.splice(share, 2);
}
const files = args.flatMap((d) => walk(resolve(d))).sort();
let entries = 0;
let modules = 0;
for (const f of files) {
  if (ENTRY_POINTS.has(f.slice(f.lastIndexOf('/') + 1))) {
    execFileSync(process.execPath, [f, '--help'], { stdio: 'ignore', timeout: 60_000 });
    entries++;
  } else {
    await import(pathToFileURL(f).href);
    modules++;
  }
}
process.stdout.write(`warm-compile-cache: ${entries} entry points run, ${modules} modules imported into ${process.env.NODE_COMPILE_CACHE}\n`);

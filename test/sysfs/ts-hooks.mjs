// Lets plain `node` (24+, which strips TypeScript types natively) run this repository's .ts files
// directly: a relative import of `./x.js` that does not exist resolves to `./x.ts`, as tsc's
// NodeNext resolution does. Used to start test helper processes such as the fake kernel daemon:
//   node --import ./test/sysfs/ts-hooks.mjs test/sysfs/kernel-daemon.ts --root <sysfs> --dev-root <dev>
import { existsSync } from 'node:fs';
import { registerHooks } from 'node:module';
import { fileURLToPath } from 'node:url';

registerHooks({
  resolve(specifier, context, nextResolve) {
    if ((specifier.startsWith('./') || specifier.startsWith('../')) && specifier.endsWith('.js') && context.parentURL) {
      const url = new URL(specifier, context.parentURL);
      if (url.protocol === 'file:' && !existsSync(fileURLToPath(url))) {
        const ts = new URL(specifier.slice(0, -3) + '.ts', context.parentURL);
        if (existsSync(fileURLToPath(ts))) return nextResolve(ts.href, context);
      }
    }
    return nextResolve(specifier, context);
  },
});

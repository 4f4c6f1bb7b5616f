// The main job in one command: a real local control plane with virtualio's API installed and the
// sample pools applied, then a readable summary. Run through `make demo` (scripts/demo.sh), which
// installs Node 24, dependencies and the Kubernetes binaries first. Node runs this file directly
// (type stripping), so it imports only Node built-ins and the harness.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.ts';

const keep = process.argv.includes('--keep');

function kubectl(cp: ControlPlane, args: string[]): string {
  return execFileSync(join(cp.binDir, 'kubectl'), ['--kubeconfig', cp.kubeconfig, ...args], { encoding: 'utf8' });
}

async function main(): Promise<void> {
  const t0 = Date.now();
  process.stderr.write('[demo] starting etcd, kube-apiserver and kube-scheduler on loopback\n');
  const cp = await startControlPlane({ verbose: true, scheduler: true, parentDir: join(process.env.VIO_CACHE ?? '/tmp', 'demo') });
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write('[demo] stopping every process it started\n');
    await cp.stop();
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(130));
  process.on('SIGTERM', () => void stop(143));
  try {
    process.stderr.write('[demo] installing the virtualio CRDs\n');
    kubectl(cp, ['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    kubectl(cp, ['wait', '--for=condition=Established', '--timeout=60s', 'crd/virtualiodevices.virtualio.dev', 'crd/virtualionodes.virtualio.dev']);
    process.stderr.write('[demo] applying the sample pools\n');
    kubectl(cp, ['apply', '--server-side', '-f', join(REPO_ROOT, 'crds/samples')]);
    const version = JSON.parse(kubectl(cp, ['version', '-o', 'json'])).serverVersion.gitVersion;
    console.log(`\nkube-apiserver ${version} at ${cp.server} (ready in ${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
    console.log('Pools (VirtualIODevice):');
    console.log(kubectl(cp, ['get', 'virtualiodevices']));
    console.log('Node plans (VirtualIONode):');
    console.log(kubectl(cp, ['get', 'virtualionodes']));
  } catch (err) {
    console.error(`[demo] failed: ${String(err)}\n[demo] logs are in ${cp.dir}`);
    await stop(1);
  }
  if (keep) {
    console.log(`The cluster keeps running. In another shell:\n  export KUBECONFIG=${cp.kubeconfig}\n  ${join(cp.binDir, 'kubectl')} get viod,vionode\nPress Ctrl-C to stop it.`);
    await new Promise(() => undefined);
  }
  await stop(0);
}

void main();

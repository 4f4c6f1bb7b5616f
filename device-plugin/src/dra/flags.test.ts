// The agent's DRA flags: off by default, cluster mode only, an absolute kubelet folder.
import { parseAgentConfig, usage } from '../config.js';

test('--dra and --kubelet-dir, from flags and environment', () => {
  const r = parseAgentConfig(['--dra', '--kubelet-dir', '/srv/kubelet'], {}, 'n1');
  expect(r.kind === 'config' && [r.config.dra, r.config.kubeletDir]).toEqual([true, '/srv/kubelet']);
  const e = parseAgentConfig([], { VIO_DRA: 'true' }, 'n1');
  expect(e.kind === 'config' && e.config.dra).toBe(true);
  expect(usage()).toContain('--dra[=true|false]');
});

test.each([
  [['--dra', '--plan-file', '/etc/plan.yaml'], '--dra needs cluster mode'],
  [['--dra=maybe'], '--dra: expected true or false, got "maybe"'],
  [['--kubelet-dir', 'var/lib/kubelet'], '--kubelet-dir: expected an absolute path'],
])('%j is refused', (argv, message) => {
  const r = parseAgentConfig(argv, {}, 'n1');
  expect(r.kind).toBe('error');
  expect(r.kind === 'error' && r.message).toContain(message);
});

import { parseAgentConfig, parseAddress, parseDuration, usage } from './config.js';

describe('parseAgentConfig', () => {
  test('defaults (cluster mode, node name from the host name)', () => {
    expect(parseAgentConfig([], {}, 'node-a')).toStrictEqual({
      kind: 'config',
      config: {
        nodeName: 'node-a',
        sysfsRoot: '/sys',
        devRoot: '/dev',
        pluginDir: '/var/lib/kubelet/device-plugins',
        podResourcesSocket: '/var/lib/kubelet/pod-resources/kubelet.sock',
        devinfoDir: '/var/run/k8s.cni.cncf.io/devinfo/dp',
        cdiDir: '/var/run/cdi',
        cdi: false,
        rescanIntervalMs: 30_000,
        stateDir: '/var/lib/virtualio',
        writeTimeoutMs: 5000,
        releaseGraceMs: 30000,
        metricsAddress: { host: '0.0.0.0', port: 8080 },
        logLevel: 'info',
        dra: false,
        vfNetConfig: false,
        kubeletDir: '/var/lib/kubelet',
        devicePluginRegistration: 'auto',
        handover: false,
        localPlan: false,
      },
    });
  });

  test('flag beats environment beats default; both flag spellings', () => {
    const r = parseAgentConfig(['--plan-file=/etc/plan.yaml', '--rescan-interval', '1m30s', '--cdi', '--metrics-address', '127.0.0.1:0'], { VIO_PLAN_FILE: '/x', NODE_NAME: 'n1', VIO_SYSFS_ROOT: '/tmp/sys', VIO_CDI: 'false', KUBECONFIG: '/k' }, 'host');
    expect(r.kind).toBe('config');
    if (r.kind !== 'config') return;
    expect(r.config).toMatchObject({ planFile: '/etc/plan.yaml', nodeName: 'n1', sysfsRoot: '/tmp/sys', cdi: true, rescanIntervalMs: 90_000, metricsAddress: { host: '127.0.0.1', port: 0 }, kubeconfig: '/k' });
  });

  test('--vf-net-config needs --dra', () => {
    const ok = parseAgentConfig(['--dra', '--vf-net-config'], {}, 'h');
    expect(ok.kind === 'config' && ok.config.vfNetConfig).toBe(true);
    expect(parseAgentConfig([], { VIO_VF_NET_CONFIG: 'true' }, 'h')).toEqual({ kind: 'error', message: '--vf-net-config applies the VF settings of DRA claims: it needs --dra' });
  });

  test('--device-plugin-registration: flag or VIO_DEVICE_PLUGIN_REGISTRATION', () => {
    const f = parseAgentConfig(['--device-plugin-registration=kubelet-sock'], {}, 'h');
    expect(f.kind === 'config' && f.config.devicePluginRegistration).toBe('kubelet-sock');
    const e = parseAgentConfig([], { VIO_DEVICE_PLUGIN_REGISTRATION: 'plugin-watcher' }, 'h');
    expect(e.kind === 'config' && e.config.devicePluginRegistration).toBe('plugin-watcher');
  });

  test('--cdi takes an optional boolean value', () => {
    const r = parseAgentConfig(['--cdi', 'false', '--log-level', 'debug'], {}, 'h');
    expect(r.kind === 'config' && r.config.cdi).toBe(false);
    expect(r.kind === 'config' && r.config.logLevel).toBe('debug');
  });

  test.each([
    [['--bogus'], /unknown flag --bogus/],
    [['--plan-file'], /--plan-file needs a value/],
    [['--rescan-interval', 'soon'], /--rescan-interval/],
    [['--metrics-address', 'nowhere'], /--metrics-address/],
    [['--log-level', 'loud'], /--log-level/],
    [['--cdi=maybe'], /--cdi/],
    [['--device-plugin-registration', 'grpc'], /--device-plugin-registration: expected one of auto, plugin-watcher, kubelet-sock, got "grpc"/],
    [['positional'], /unexpected argument/],
  ])('%j is an error', (argv, message) => {
    const r = parseAgentConfig(argv, {}, 'h');
    expect(r.kind).toBe('error');
    expect(r.kind === 'error' && r.message).toMatch(message);
  });

  test('--help', () => {
    const r = parseAgentConfig(['--node-name', 'x', '--help'], {}, 'h');
    expect(r).toStrictEqual({ kind: 'help', text: usage() });
    for (const flag of ['--node-name', '--plan-file', '--kubeconfig', '--sysfs-root', '--dev-root', '--plugin-dir', '--pod-resources-socket', '--devinfo-dir', '--cdi-dir', '--cdi', '--rescan-interval', '--metrics-address', '--log-level']) {
      expect(usage()).toContain(flag);
    }
  });

  test.each([
    ['30s', 30_000],
    ['500ms', 500],
    ['1m30s', 90_000],
    ['2h', 7_200_000],
    ['5', 5000],
    ['1.5s', 1500],
    ['x', undefined],
    ['', undefined],
    ['10q', undefined],
  ])('duration %s', (t, ms) => expect(parseDuration(t)).toBe(ms));

  test.each([
    [':9090', { host: '0.0.0.0', port: 9090 }],
    ['[::1]:80', { host: '::1', port: 80 }],
    ['localhost:99999', undefined],
  ])('address %s', (t, a) => expect(parseAddress(t)).toStrictEqual(a));
});

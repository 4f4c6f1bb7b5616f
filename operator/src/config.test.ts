import { ConfigError, parseConfig, parseDuration, parseExtraPermittedHostDevices, usage } from './config.js';

describe('parseConfig', () => {
  test('defaults from docs/flags.md', () => {
    expect(parseConfig([], {}, 'host-1')).toEqual({
      help: false, kubeconfig: undefined, namespace: 'virtualio-system', identity: 'host-1', leaderElect: true, leaseDurationMs: 15_000,
      kubevirtNamespace: 'kubevirt', kubevirtName: 'kubevirt', managePermittedHostDevices: false, extraPermittedHostDevices: undefined,
      metricsHost: '0.0.0.0', metricsPort: 8080, logLevel: 'info',
    });
  });
  test('flag beats environment beats default', () => {
    const env = { POD_NAMESPACE: 'from-env', POD_NAME: 'pod-x', VIO_LEASE_DURATION: '30s', VIO_MANAGE_PERMITTED_HOST_DEVICES: 'true', KUBECONFIG: '/k' };
    const c = parseConfig(['--namespace=from-flag', '--lease-duration', '4s', '--leader-elect=false', '--metrics-address', '127.0.0.1:0'], env, 'h');
    expect(c).toMatchObject({ namespace: 'from-flag', identity: 'pod-x', leaseDurationMs: 4000, leaderElect: false, managePermittedHostDevices: true, kubeconfig: '/k', metricsHost: '127.0.0.1', metricsPort: 0 });
  });
  test('a bare boolean flag means true', () => {
    expect(parseConfig(['--manage-permitted-host-devices', '--log-level', 'debug'], {}, 'h')).toMatchObject({ managePermittedHostDevices: true, logLevel: 'debug' });
  });
  test.each([
    [['--nope']], [['--lease-duration=soon']], [['--leader-elect=maybe']], [['--metrics-address=8080']], [['--log-level=loud']], [['stray']], [['--namespace']],
  ])('rejects %j', (argv) => {
    expect(() => parseConfig(argv, {}, 'h')).toThrow(ConfigError);
  });
  test('--help and usage list every flag', () => {
    expect(parseConfig(['--help'], {}, 'h').help).toBe(true);
    for (const f of ['--kubeconfig', '--namespace', '--identity', '--leader-elect', '--lease-duration', '--kubevirt-namespace', '--kubevirt-name',
      '--manage-permitted-host-devices', '--extra-permitted-host-devices', '--metrics-address', '--log-level']) expect(usage()).toContain(f);
  });
  test.each([['15s', 15000], ['500ms', 500], ['1m30s', 90000], ['2h', 7_200_000], ['1.5s', 1500]])('duration %s', (s, ms) => {
    expect(parseDuration(s)).toBe(ms);
  });
});

describe('parseExtraPermittedHostDevices', () => {
  test('YAML lists, optionally under permittedHostDevices', () => {
    const want = {
      pciHostDevices: [{ pciVendorSelector: '10de:1eb8', resourceName: 'nvidia.com/T4' }],
      mediatedDevices: [{ mdevNameSelector: 'GRID T4-1Q', resourceName: 'nvidia.com/GRID_T4-1Q', externalResourceProvider: true }],
    };
    const yaml = 'pciHostDevices:\n- pciVendorSelector: 10DE:1EB8\n  resourceName: nvidia.com/T4\nmediatedDevices:\n- {mdevNameSelector: GRID T4-1Q, resourceName: nvidia.com/GRID_T4-1Q, externalResourceProvider: true}\n';
    expect(parseExtraPermittedHostDevices(yaml)).toEqual(want);
    expect(parseExtraPermittedHostDevices(JSON.stringify({ permittedHostDevices: want }))).toEqual(want);
    expect(parseExtraPermittedHostDevices('')).toEqual({ pciHostDevices: [], mediatedDevices: [] });
  });
  test.each([
    ['usb: []'], ['pciHostDevices: {}'], ['pciHostDevices: [{resourceName: x}]'], ['pciHostDevices: [{pciVendorSelector: "10de", resourceName: x}]'],
    ['mediatedDevices: [{mdevNameSelector: a, resourceName: x, externalResourceProvider: "yes"}]'], ['[1, 2]'], ['{ bad'],
  ])('rejects %s with a clear error', (text) => {
    expect(() => parseExtraPermittedHostDevices(text)).toThrow(ConfigError);
  });
});

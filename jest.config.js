// Three projects: `unit` (pure functions, temp-dir sysfs, fake kubelet), `integration` (real
// kube-apiserver, real kubelet code, KubeVirt code) and `kernel` (the agent on a real Linux kernel in
// QEMU). All run in native ESM mode
// (NODE_OPTIONS=--experimental-vm-modules, set by the npm scripts) because @kubernetes/client-node is
// ESM-only. The integration project's global setup starts etcd + kube-apiserver once.
const tsTransform = {
  '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json', diagnostics: false }],
};
const common = {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  transform: tsTransform,
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
};

export default {
  // Global options (jest ignores them inside projects): integration tests wait on real processes.
  testTimeout: 120000,
  slowTestThreshold: 30,
  reporters: ['default', '<rootDir>/test/jest/summary-reporter.js'],
  projects: [
    {
      ...common,
      displayName: 'unit',
      testMatch: ['<rootDir>/operator/**/*.test.ts', '<rootDir>/device-plugin/**/*.test.ts', '<rootDir>/test/unit/**/*.test.ts'],
    },
    {
      ...common,
      displayName: 'integration',
      testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
      globalSetup: '<rootDir>/test/jest/global-setup.ts',
      globalTeardown: '<rootDir>/test/jest/global-teardown.ts',
    },
    {
      // Real Linux kernel under QEMU (test/kernel/run.sh): one guest boot, software-emulated where
      // KVM does not work; skipped with its reason when it cannot run (not root, nothing cached).
      ...common,
      displayName: 'kernel',
      testMatch: ['<rootDir>/test/kernel/**/*.test.ts'],
    },
  ],
};

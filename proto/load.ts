// Loads the kubelet APIs at run time with the same options the generated types were made with
// (scripts/gen.mjs), so the objects grpc-js hands us match proto/generated exactly.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType as DevicePluginProto } from './generated/deviceplugin/api.js';
import type { ProtoGrpcType as PodResourcesProto } from './generated/podresources/api.js';
import type { ProtoGrpcType as DraV1Proto } from './generated/dra-v1/api.js';
import type { ProtoGrpcType as DraV1beta1Proto } from './generated/dra-v1beta1/api.js';
import type { ProtoGrpcType as PluginRegistrationProto } from './generated/pluginregistration/api.js';
import type { ProtoGrpcType as DraHealthProto } from './generated/dra-health/api.js';

/**
 * Folder holding the .proto sources: this file's own folder in the TypeScript tree, else the nearest
 * `proto/` upwards that holds them (dist/proto/load.js → <root>/proto; the image's bundles,
 * /app/agent/ and /app/operator/ → /app/proto; dist/image/agent/ → <root>/proto).
 */
export function protoDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  if (existsSync(join(here, 'deviceplugin'))) return here;
  for (let dir = dirname(here); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'proto', 'deviceplugin'))) return join(dir, 'proto');
    if (dirname(dir) === dir) return here; // not found: loading names the missing file
  }
}

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

function load<T>(file: string): T {
  const def = protoLoader.loadSync(file, { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
  return grpc.loadPackageDefinition(def) as unknown as T;
}

let devicePlugin: DevicePluginProto | undefined;
let podResources: PodResourcesProto | undefined;

/** The device plugin API v1beta1 (services Registration and DevicePlugin). Loaded once. */
export function loadDevicePluginApi(): DevicePluginProto {
  devicePlugin ??= load<DevicePluginProto>('deviceplugin/v1beta1/api.proto');
  return devicePlugin;
}

/** The PodResources API v1 (service PodResourcesLister). Loaded once. */
export function loadPodResourcesApi(): PodResourcesProto {
  podResources ??= load<PodResourcesProto>('podresources/v1/api.proto');
  return podResources;
}


let draV1: DraV1Proto | undefined;
let draV1beta1: DraV1beta1Proto | undefined;
let pluginRegistration: PluginRegistrationProto | undefined;

/** The kubelet DRA plugin API v1 (service k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin). Loaded once. */
export function loadDraV1Api(): DraV1Proto {
  draV1 ??= load<DraV1Proto>('dra/v1/api.proto');
  return draV1;
}

/** The kubelet DRA plugin API v1beta1, still served by kubelets up to 1.36. Loaded once. */
export function loadDraV1beta1Api(): DraV1beta1Proto {
  draV1beta1 ??= load<DraV1beta1Proto>('dra/v1beta1/api.proto');
  return draV1beta1;
}

/** The plugin watcher's registration API (service pluginregistration.Registration). Loaded once. */
export function loadPluginRegistrationApi(): PluginRegistrationProto {
  pluginRegistration ??= load<PluginRegistrationProto>('pluginregistration/v1/api.proto');
  return pluginRegistration;
}

let draHealth: DraHealthProto | undefined;

/** The kubelet DRA device health API v1alpha1 (service v1alpha1.DRAResourceHealth). Loaded once. */
export function loadDraHealthApi(): DraHealthProto {
  draHealth ??= load<DraHealthProto>('dra-health/v1alpha1/api.proto');
  return draHealth;
}

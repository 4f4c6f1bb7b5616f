// Loads the kubelet APIs at run time from their parsed form (proto/generated/*/descriptor.ts, made by
// scripts/gen.mjs from the .proto sources), converting messages with the same options the generated
// types were made with, so the objects grpc-js hands us match proto/generated exactly.
//
// The services are built here with protobufjs rather than by @grpc/proto-loader (which made them
// before, and still makes the types at `npm run gen`): at load, proto-loader builds protobuf's own
// descriptor.proto and a file descriptor per API for gRPC reflection, which nothing here serves, and
// parses the .proto text; under QEMU's emulation that was ~1 s of an agent start
// (docs/design-decisions.md, "Agent start-up"). test/unit/proto-load.test.ts checks that both make the same
// services and the same bytes and objects.
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs/light.js'; // fromJSON only: no .proto parser
import type { ProtoGrpcType as DevicePluginProto } from './generated/deviceplugin/api.js';
import type { ProtoGrpcType as PodResourcesProto } from './generated/podresources/api.js';
import type { ProtoGrpcType as DraV1Proto } from './generated/dra-v1/api.js';
import type { ProtoGrpcType as DraV1beta1Proto } from './generated/dra-v1beta1/api.js';
import type { ProtoGrpcType as PluginRegistrationProto } from './generated/pluginregistration/api.js';
import type { ProtoGrpcType as DraHealthProto } from './generated/dra-health/api.js';
import { descriptor as devicePluginDescriptor } from './generated/deviceplugin/descriptor.js';
import { descriptor as podResourcesDescriptor } from './generated/podresources/descriptor.js';
import { descriptor as draV1Descriptor } from './generated/dra-v1/descriptor.js';
import { descriptor as draV1beta1Descriptor } from './generated/dra-v1beta1/descriptor.js';
import { descriptor as pluginRegistrationDescriptor } from './generated/pluginregistration/descriptor.js';
import { descriptor as draHealthDescriptor } from './generated/dra-health/descriptor.js';

/** How a decoded message becomes an object: the options of `npm run gen`'s types (scripts/gen.mjs). */
export const CONVERSION: protobuf.IConversionOptions = { longs: Number, enums: String, defaults: true, oneofs: true };

function serializer(type: protobuf.Type): grpc.serialize<object> {
  return (value) => Buffer.from(type.encode(type.fromObject(value)).finish());
}

function deserializer(type: protobuf.Type): grpc.deserialize<object> {
  return (bytes) => type.toObject(type.decode(bytes), CONVERSION);
}

/** "GetPreferredAllocation" → "getPreferredAllocation": the method's second name on a client. */
const lowerFirst = (name: string): string => name.charAt(0).toLowerCase() + name.slice(1);

/** Every service of a parsed API as grpc-js's package definition, keyed by its full name. */
export function packageDefinition(parsed: object): Parameters<typeof grpc.loadPackageDefinition>[0] {
  const root = protobuf.Root.fromJSON(parsed as protobuf.INamespace);
  root.resolveAll();
  const services: Record<string, grpc.ServiceDefinition> = {};
  const walk = (ns: protobuf.NamespaceBase): void => {
    for (const obj of ns.nestedArray) {
      if (obj instanceof protobuf.Service) {
        const name = obj.fullName.slice(1);
        const methods: Record<string, grpc.MethodDefinition<object, object>> = {};
        for (const m of obj.methodsArray) {
          const req = m.resolvedRequestType as protobuf.Type;
          const res = m.resolvedResponseType as protobuf.Type;
          methods[m.name] = {
            path: `/${name}/${m.name}`,
            requestStream: m.requestStream === true,
            responseStream: m.responseStream === true,
            requestSerialize: serializer(req),
            requestDeserialize: deserializer(req),
            responseSerialize: serializer(res),
            responseDeserialize: deserializer(res),
            originalName: lowerFirst(m.name),
          };
        }
        services[name] = methods;
      }
      if (obj instanceof protobuf.Namespace) walk(obj);
    }
  };
  walk(root);
  return services;
}

function load<T>(parsed: object): T {
  return grpc.loadPackageDefinition(packageDefinition(parsed)) as unknown as T;
}

let devicePlugin: DevicePluginProto | undefined;
let podResources: PodResourcesProto | undefined;

/** The device plugin API v1beta1 (services Registration and DevicePlugin). Loaded once. */
export function loadDevicePluginApi(): DevicePluginProto {
  devicePlugin ??= load<DevicePluginProto>(devicePluginDescriptor);
  return devicePlugin;
}

/** The PodResources API v1 (service PodResourcesLister). Loaded once. */
export function loadPodResourcesApi(): PodResourcesProto {
  podResources ??= load<PodResourcesProto>(podResourcesDescriptor);
  return podResources;
}


let draV1: DraV1Proto | undefined;
let draV1beta1: DraV1beta1Proto | undefined;
let pluginRegistration: PluginRegistrationProto | undefined;

/** The kubelet DRA plugin API v1 (service k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin). Loaded once. */
export function loadDraV1Api(): DraV1Proto {
  draV1 ??= load<DraV1Proto>(draV1Descriptor);
  return draV1;
}

/** The kubelet DRA plugin API v1beta1, still served by kubelets up to 1.36. Loaded once. */
export function loadDraV1beta1Api(): DraV1beta1Proto {
  draV1beta1 ??= load<DraV1beta1Proto>(draV1beta1Descriptor);
  return draV1beta1;
}

/** The plugin watcher's registration API (service pluginregistration.Registration). Loaded once. */
export function loadPluginRegistrationApi(): PluginRegistrationProto {
  pluginRegistration ??= load<PluginRegistrationProto>(pluginRegistrationDescriptor);
  return pluginRegistration;
}

let draHealth: DraHealthProto | undefined;

/** The kubelet DRA device health API v1alpha1 (service v1alpha1.DRAResourceHealth). Loaded once. */
export function loadDraHealthApi(): DraHealthProto {
  draHealth ??= load<DraHealthProto>(draHealthDescriptor);
  return draHealth;
}

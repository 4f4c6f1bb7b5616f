import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { AllocateRequest__Input as _v1beta1_AllocateRequest__Input, AllocateRequest__Output as _v1beta1_AllocateRequest__Output } from './v1beta1/AllocateRequest.js';
import type { AllocateResponse__Input as _v1beta1_AllocateResponse__Input, AllocateResponse__Output as _v1beta1_AllocateResponse__Output } from './v1beta1/AllocateResponse.js';
import type { CDIDevice__Input as _v1beta1_CDIDevice__Input, CDIDevice__Output as _v1beta1_CDIDevice__Output } from './v1beta1/CDIDevice.js';
import type { ContainerAllocateRequest__Input as _v1beta1_ContainerAllocateRequest__Input, ContainerAllocateRequest__Output as _v1beta1_ContainerAllocateRequest__Output } from './v1beta1/ContainerAllocateRequest.js';
import type { ContainerAllocateResponse__Input as _v1beta1_ContainerAllocateResponse__Input, ContainerAllocateResponse__Output as _v1beta1_ContainerAllocateResponse__Output } from './v1beta1/ContainerAllocateResponse.js';
import type { ContainerPreferredAllocationRequest__Input as _v1beta1_ContainerPreferredAllocationRequest__Input, ContainerPreferredAllocationRequest__Output as _v1beta1_ContainerPreferredAllocationRequest__Output } from './v1beta1/ContainerPreferredAllocationRequest.js';
import type { ContainerPreferredAllocationResponse__Input as _v1beta1_ContainerPreferredAllocationResponse__Input, ContainerPreferredAllocationResponse__Output as _v1beta1_ContainerPreferredAllocationResponse__Output } from './v1beta1/ContainerPreferredAllocationResponse.js';
import type { Device__Input as _v1beta1_Device__Input, Device__Output as _v1beta1_Device__Output } from './v1beta1/Device.js';
import type { DevicePluginClient as _v1beta1_DevicePluginClient, DevicePluginDefinition as _v1beta1_DevicePluginDefinition } from './v1beta1/DevicePlugin.js';
import type { DevicePluginOptions__Input as _v1beta1_DevicePluginOptions__Input, DevicePluginOptions__Output as _v1beta1_DevicePluginOptions__Output } from './v1beta1/DevicePluginOptions.js';
import type { DeviceSpec__Input as _v1beta1_DeviceSpec__Input, DeviceSpec__Output as _v1beta1_DeviceSpec__Output } from './v1beta1/DeviceSpec.js';
import type { Empty__Input as _v1beta1_Empty__Input, Empty__Output as _v1beta1_Empty__Output } from './v1beta1/Empty.js';
import type { ListAndWatchResponse__Input as _v1beta1_ListAndWatchResponse__Input, ListAndWatchResponse__Output as _v1beta1_ListAndWatchResponse__Output } from './v1beta1/ListAndWatchResponse.js';
import type { Mount__Input as _v1beta1_Mount__Input, Mount__Output as _v1beta1_Mount__Output } from './v1beta1/Mount.js';
import type { NUMANode__Input as _v1beta1_NUMANode__Input, NUMANode__Output as _v1beta1_NUMANode__Output } from './v1beta1/NUMANode.js';
import type { PreStartContainerRequest__Input as _v1beta1_PreStartContainerRequest__Input, PreStartContainerRequest__Output as _v1beta1_PreStartContainerRequest__Output } from './v1beta1/PreStartContainerRequest.js';
import type { PreStartContainerResponse__Input as _v1beta1_PreStartContainerResponse__Input, PreStartContainerResponse__Output as _v1beta1_PreStartContainerResponse__Output } from './v1beta1/PreStartContainerResponse.js';
import type { PreferredAllocationRequest__Input as _v1beta1_PreferredAllocationRequest__Input, PreferredAllocationRequest__Output as _v1beta1_PreferredAllocationRequest__Output } from './v1beta1/PreferredAllocationRequest.js';
import type { PreferredAllocationResponse__Input as _v1beta1_PreferredAllocationResponse__Input, PreferredAllocationResponse__Output as _v1beta1_PreferredAllocationResponse__Output } from './v1beta1/PreferredAllocationResponse.js';
import type { RegisterRequest__Input as _v1beta1_RegisterRequest__Input, RegisterRequest__Output as _v1beta1_RegisterRequest__Output } from './v1beta1/RegisterRequest.js';
import type { RegistrationClient as _v1beta1_RegistrationClient, RegistrationDefinition as _v1beta1_RegistrationDefinition } from './v1beta1/Registration.js';
import type { TopologyInfo__Input as _v1beta1_TopologyInfo__Input, TopologyInfo__Output as _v1beta1_TopologyInfo__Output } from './v1beta1/TopologyInfo.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  v1beta1: {
    AllocateRequest: MessageTypeDefinition<_v1beta1_AllocateRequest__Input, _v1beta1_AllocateRequest__Output>
    AllocateResponse: MessageTypeDefinition<_v1beta1_AllocateResponse__Input, _v1beta1_AllocateResponse__Output>
    CDIDevice: MessageTypeDefinition<_v1beta1_CDIDevice__Input, _v1beta1_CDIDevice__Output>
    ContainerAllocateRequest: MessageTypeDefinition<_v1beta1_ContainerAllocateRequest__Input, _v1beta1_ContainerAllocateRequest__Output>
    ContainerAllocateResponse: MessageTypeDefinition<_v1beta1_ContainerAllocateResponse__Input, _v1beta1_ContainerAllocateResponse__Output>
    ContainerPreferredAllocationRequest: MessageTypeDefinition<_v1beta1_ContainerPreferredAllocationRequest__Input, _v1beta1_ContainerPreferredAllocationRequest__Output>
    ContainerPreferredAllocationResponse: MessageTypeDefinition<_v1beta1_ContainerPreferredAllocationResponse__Input, _v1beta1_ContainerPreferredAllocationResponse__Output>
    Device: MessageTypeDefinition<_v1beta1_Device__Input, _v1beta1_Device__Output>
    DevicePlugin: SubtypeConstructor<typeof grpc.Client, _v1beta1_DevicePluginClient> & { service: _v1beta1_DevicePluginDefinition }
    DevicePluginOptions: MessageTypeDefinition<_v1beta1_DevicePluginOptions__Input, _v1beta1_DevicePluginOptions__Output>
    DeviceSpec: MessageTypeDefinition<_v1beta1_DeviceSpec__Input, _v1beta1_DeviceSpec__Output>
    Empty: MessageTypeDefinition<_v1beta1_Empty__Input, _v1beta1_Empty__Output>
    ListAndWatchResponse: MessageTypeDefinition<_v1beta1_ListAndWatchResponse__Input, _v1beta1_ListAndWatchResponse__Output>
    Mount: MessageTypeDefinition<_v1beta1_Mount__Input, _v1beta1_Mount__Output>
    NUMANode: MessageTypeDefinition<_v1beta1_NUMANode__Input, _v1beta1_NUMANode__Output>
    PreStartContainerRequest: MessageTypeDefinition<_v1beta1_PreStartContainerRequest__Input, _v1beta1_PreStartContainerRequest__Output>
    PreStartContainerResponse: MessageTypeDefinition<_v1beta1_PreStartContainerResponse__Input, _v1beta1_PreStartContainerResponse__Output>
    PreferredAllocationRequest: MessageTypeDefinition<_v1beta1_PreferredAllocationRequest__Input, _v1beta1_PreferredAllocationRequest__Output>
    PreferredAllocationResponse: MessageTypeDefinition<_v1beta1_PreferredAllocationResponse__Input, _v1beta1_PreferredAllocationResponse__Output>
    RegisterRequest: MessageTypeDefinition<_v1beta1_RegisterRequest__Input, _v1beta1_RegisterRequest__Output>
    Registration: SubtypeConstructor<typeof grpc.Client, _v1beta1_RegistrationClient> & { service: _v1beta1_RegistrationDefinition }
    TopologyInfo: MessageTypeDefinition<_v1beta1_TopologyInfo__Input, _v1beta1_TopologyInfo__Output>
  }
}


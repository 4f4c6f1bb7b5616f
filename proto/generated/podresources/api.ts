import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { AllocatableResourcesRequest__Input as _v1_AllocatableResourcesRequest__Input, AllocatableResourcesRequest__Output as _v1_AllocatableResourcesRequest__Output } from './v1/AllocatableResourcesRequest.js';
import type { AllocatableResourcesResponse__Input as _v1_AllocatableResourcesResponse__Input, AllocatableResourcesResponse__Output as _v1_AllocatableResourcesResponse__Output } from './v1/AllocatableResourcesResponse.js';
import type { CDIDevice__Input as _v1_CDIDevice__Input, CDIDevice__Output as _v1_CDIDevice__Output } from './v1/CDIDevice.js';
import type { ClaimResource__Input as _v1_ClaimResource__Input, ClaimResource__Output as _v1_ClaimResource__Output } from './v1/ClaimResource.js';
import type { ContainerDevices__Input as _v1_ContainerDevices__Input, ContainerDevices__Output as _v1_ContainerDevices__Output } from './v1/ContainerDevices.js';
import type { ContainerMemory__Input as _v1_ContainerMemory__Input, ContainerMemory__Output as _v1_ContainerMemory__Output } from './v1/ContainerMemory.js';
import type { ContainerResources__Input as _v1_ContainerResources__Input, ContainerResources__Output as _v1_ContainerResources__Output } from './v1/ContainerResources.js';
import type { DynamicResource__Input as _v1_DynamicResource__Input, DynamicResource__Output as _v1_DynamicResource__Output } from './v1/DynamicResource.js';
import type { GetPodResourcesRequest__Input as _v1_GetPodResourcesRequest__Input, GetPodResourcesRequest__Output as _v1_GetPodResourcesRequest__Output } from './v1/GetPodResourcesRequest.js';
import type { GetPodResourcesResponse__Input as _v1_GetPodResourcesResponse__Input, GetPodResourcesResponse__Output as _v1_GetPodResourcesResponse__Output } from './v1/GetPodResourcesResponse.js';
import type { ListPodResourcesRequest__Input as _v1_ListPodResourcesRequest__Input, ListPodResourcesRequest__Output as _v1_ListPodResourcesRequest__Output } from './v1/ListPodResourcesRequest.js';
import type { ListPodResourcesResponse__Input as _v1_ListPodResourcesResponse__Input, ListPodResourcesResponse__Output as _v1_ListPodResourcesResponse__Output } from './v1/ListPodResourcesResponse.js';
import type { NUMANode__Input as _v1_NUMANode__Input, NUMANode__Output as _v1_NUMANode__Output } from './v1/NUMANode.js';
import type { PodResources__Input as _v1_PodResources__Input, PodResources__Output as _v1_PodResources__Output } from './v1/PodResources.js';
import type { PodResourcesListerClient as _v1_PodResourcesListerClient, PodResourcesListerDefinition as _v1_PodResourcesListerDefinition } from './v1/PodResourcesLister.js';
import type { TopologyInfo__Input as _v1_TopologyInfo__Input, TopologyInfo__Output as _v1_TopologyInfo__Output } from './v1/TopologyInfo.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  v1: {
    AllocatableResourcesRequest: MessageTypeDefinition<_v1_AllocatableResourcesRequest__Input, _v1_AllocatableResourcesRequest__Output>
    AllocatableResourcesResponse: MessageTypeDefinition<_v1_AllocatableResourcesResponse__Input, _v1_AllocatableResourcesResponse__Output>
    CDIDevice: MessageTypeDefinition<_v1_CDIDevice__Input, _v1_CDIDevice__Output>
    ClaimResource: MessageTypeDefinition<_v1_ClaimResource__Input, _v1_ClaimResource__Output>
    ContainerDevices: MessageTypeDefinition<_v1_ContainerDevices__Input, _v1_ContainerDevices__Output>
    ContainerMemory: MessageTypeDefinition<_v1_ContainerMemory__Input, _v1_ContainerMemory__Output>
    ContainerResources: MessageTypeDefinition<_v1_ContainerResources__Input, _v1_ContainerResources__Output>
    DynamicResource: MessageTypeDefinition<_v1_DynamicResource__Input, _v1_DynamicResource__Output>
    GetPodResourcesRequest: MessageTypeDefinition<_v1_GetPodResourcesRequest__Input, _v1_GetPodResourcesRequest__Output>
    GetPodResourcesResponse: MessageTypeDefinition<_v1_GetPodResourcesResponse__Input, _v1_GetPodResourcesResponse__Output>
    ListPodResourcesRequest: MessageTypeDefinition<_v1_ListPodResourcesRequest__Input, _v1_ListPodResourcesRequest__Output>
    ListPodResourcesResponse: MessageTypeDefinition<_v1_ListPodResourcesResponse__Input, _v1_ListPodResourcesResponse__Output>
    NUMANode: MessageTypeDefinition<_v1_NUMANode__Input, _v1_NUMANode__Output>
    PodResources: MessageTypeDefinition<_v1_PodResources__Input, _v1_PodResources__Output>
    PodResourcesLister: SubtypeConstructor<typeof grpc.Client, _v1_PodResourcesListerClient> & { service: _v1_PodResourcesListerDefinition }
    TopologyInfo: MessageTypeDefinition<_v1_TopologyInfo__Input, _v1_TopologyInfo__Output>
  }
}


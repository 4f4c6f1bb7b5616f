// Original file: podresources/v1/api.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { AllocatableResourcesRequest__Input as _v1_AllocatableResourcesRequest__Input, AllocatableResourcesRequest__Output as _v1_AllocatableResourcesRequest__Output } from '../v1/AllocatableResourcesRequest.js';
import type { AllocatableResourcesResponse__Input as _v1_AllocatableResourcesResponse__Input, AllocatableResourcesResponse__Output as _v1_AllocatableResourcesResponse__Output } from '../v1/AllocatableResourcesResponse.js';
import type { GetPodResourcesRequest__Input as _v1_GetPodResourcesRequest__Input, GetPodResourcesRequest__Output as _v1_GetPodResourcesRequest__Output } from '../v1/GetPodResourcesRequest.js';
import type { GetPodResourcesResponse__Input as _v1_GetPodResourcesResponse__Input, GetPodResourcesResponse__Output as _v1_GetPodResourcesResponse__Output } from '../v1/GetPodResourcesResponse.js';
import type { ListPodResourcesRequest__Input as _v1_ListPodResourcesRequest__Input, ListPodResourcesRequest__Output as _v1_ListPodResourcesRequest__Output } from '../v1/ListPodResourcesRequest.js';
import type { ListPodResourcesResponse__Input as _v1_ListPodResourcesResponse__Input, ListPodResourcesResponse__Output as _v1_ListPodResourcesResponse__Output } from '../v1/ListPodResourcesResponse.js';

export interface PodResourcesListerClient extends grpc.Client {
  Get(argument: _v1_GetPodResourcesRequest__Input, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_v1_GetPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  Get(argument: _v1_GetPodResourcesRequest__Input, metadata: grpc.Metadata, callback: grpc.requestCallback<_v1_GetPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  Get(argument: _v1_GetPodResourcesRequest__Input, options: grpc.CallOptions, callback: grpc.requestCallback<_v1_GetPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  Get(argument: _v1_GetPodResourcesRequest__Input, callback: grpc.requestCallback<_v1_GetPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  get(argument: _v1_GetPodResourcesRequest__Input, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_v1_GetPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  get(argument: _v1_GetPodResourcesRequest__Input, metadata: grpc.Metadata, callback: grpc.requestCallback<_v1_GetPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  get(argument: _v1_GetPodResourcesRequest__Input, options: grpc.CallOptions, callback: grpc.requestCallback<_v1_GetPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  get(argument: _v1_GetPodResourcesRequest__Input, callback: grpc.requestCallback<_v1_GetPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  
  GetAllocatableResources(argument: _v1_AllocatableResourcesRequest__Input, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_v1_AllocatableResourcesResponse__Output>): grpc.ClientUnaryCall;
  GetAllocatableResources(argument: _v1_AllocatableResourcesRequest__Input, metadata: grpc.Metadata, callback: grpc.requestCallback<_v1_AllocatableResourcesResponse__Output>): grpc.ClientUnaryCall;
  GetAllocatableResources(argument: _v1_AllocatableResourcesRequest__Input, options: grpc.CallOptions, callback: grpc.requestCallback<_v1_AllocatableResourcesResponse__Output>): grpc.ClientUnaryCall;
  GetAllocatableResources(argument: _v1_AllocatableResourcesRequest__Input, callback: grpc.requestCallback<_v1_AllocatableResourcesResponse__Output>): grpc.ClientUnaryCall;
  getAllocatableResources(argument: _v1_AllocatableResourcesRequest__Input, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_v1_AllocatableResourcesResponse__Output>): grpc.ClientUnaryCall;
  getAllocatableResources(argument: _v1_AllocatableResourcesRequest__Input, metadata: grpc.Metadata, callback: grpc.requestCallback<_v1_AllocatableResourcesResponse__Output>): grpc.ClientUnaryCall;
  getAllocatableResources(argument: _v1_AllocatableResourcesRequest__Input, options: grpc.CallOptions, callback: grpc.requestCallback<_v1_AllocatableResourcesResponse__Output>): grpc.ClientUnaryCall;
  getAllocatableResources(argument: _v1_AllocatableResourcesRequest__Input, callback: grpc.requestCallback<_v1_AllocatableResourcesResponse__Output>): grpc.ClientUnaryCall;
  
  List(argument: _v1_ListPodResourcesRequest__Input, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_v1_ListPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  List(argument: _v1_ListPodResourcesRequest__Input, metadata: grpc.Metadata, callback: grpc.requestCallback<_v1_ListPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  List(argument: _v1_ListPodResourcesRequest__Input, options: grpc.CallOptions, callback: grpc.requestCallback<_v1_ListPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  List(argument: _v1_ListPodResourcesRequest__Input, callback: grpc.requestCallback<_v1_ListPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  list(argument: _v1_ListPodResourcesRequest__Input, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_v1_ListPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  list(argument: _v1_ListPodResourcesRequest__Input, metadata: grpc.Metadata, callback: grpc.requestCallback<_v1_ListPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  list(argument: _v1_ListPodResourcesRequest__Input, options: grpc.CallOptions, callback: grpc.requestCallback<_v1_ListPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  list(argument: _v1_ListPodResourcesRequest__Input, callback: grpc.requestCallback<_v1_ListPodResourcesResponse__Output>): grpc.ClientUnaryCall;
  
}

export interface PodResourcesListerHandlers extends grpc.UntypedServiceImplementation {
  Get: grpc.handleUnaryCall<_v1_GetPodResourcesRequest__Output, _v1_GetPodResourcesResponse__Input>;
  
  GetAllocatableResources: grpc.handleUnaryCall<_v1_AllocatableResourcesRequest__Output, _v1_AllocatableResourcesResponse__Input>;
  
  List: grpc.handleUnaryCall<_v1_ListPodResourcesRequest__Output, _v1_ListPodResourcesResponse__Input>;
  
}

export interface PodResourcesListerDefinition extends grpc.ServiceDefinition {
  Get: MethodDefinition<_v1_GetPodResourcesRequest__Input, _v1_GetPodResourcesResponse__Input, _v1_GetPodResourcesRequest__Output, _v1_GetPodResourcesResponse__Output>
  GetAllocatableResources: MethodDefinition<_v1_AllocatableResourcesRequest__Input, _v1_AllocatableResourcesResponse__Input, _v1_AllocatableResourcesRequest__Output, _v1_AllocatableResourcesResponse__Output>
  List: MethodDefinition<_v1_ListPodResourcesRequest__Input, _v1_ListPodResourcesResponse__Input, _v1_ListPodResourcesRequest__Output, _v1_ListPodResourcesResponse__Output>
}

// Original file: dra-health/v1alpha1/api.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { NodeWatchResourcesRequest__Input as _v1alpha1_NodeWatchResourcesRequest__Input, NodeWatchResourcesRequest__Output as _v1alpha1_NodeWatchResourcesRequest__Output } from '../v1alpha1/NodeWatchResourcesRequest.js';
import type { NodeWatchResourcesResponse__Input as _v1alpha1_NodeWatchResourcesResponse__Input, NodeWatchResourcesResponse__Output as _v1alpha1_NodeWatchResourcesResponse__Output } from '../v1alpha1/NodeWatchResourcesResponse.js';

export interface DRAResourceHealthClient extends grpc.Client {
  NodeWatchResources(argument: _v1alpha1_NodeWatchResourcesRequest__Input, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_v1alpha1_NodeWatchResourcesResponse__Output>;
  NodeWatchResources(argument: _v1alpha1_NodeWatchResourcesRequest__Input, options?: grpc.CallOptions): grpc.ClientReadableStream<_v1alpha1_NodeWatchResourcesResponse__Output>;
  nodeWatchResources(argument: _v1alpha1_NodeWatchResourcesRequest__Input, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_v1alpha1_NodeWatchResourcesResponse__Output>;
  nodeWatchResources(argument: _v1alpha1_NodeWatchResourcesRequest__Input, options?: grpc.CallOptions): grpc.ClientReadableStream<_v1alpha1_NodeWatchResourcesResponse__Output>;
  
}

export interface DRAResourceHealthHandlers extends grpc.UntypedServiceImplementation {
  NodeWatchResources: grpc.handleServerStreamingCall<_v1alpha1_NodeWatchResourcesRequest__Output, _v1alpha1_NodeWatchResourcesResponse__Input>;
  
}

export interface DRAResourceHealthDefinition extends grpc.ServiceDefinition {
  NodeWatchResources: MethodDefinition<_v1alpha1_NodeWatchResourcesRequest__Input, _v1alpha1_NodeWatchResourcesResponse__Input, _v1alpha1_NodeWatchResourcesRequest__Output, _v1alpha1_NodeWatchResourcesResponse__Output>
}

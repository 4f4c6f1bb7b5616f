// Original file: podresources/v1/api.proto

import type { ContainerDevices__Input as _v1_ContainerDevices__Input, ContainerDevices__Output as _v1_ContainerDevices__Output } from '../v1/ContainerDevices.js';
import type { ContainerMemory__Input as _v1_ContainerMemory__Input, ContainerMemory__Output as _v1_ContainerMemory__Output } from '../v1/ContainerMemory.js';
import type { Long } from '@grpc/proto-loader';

export interface AllocatableResourcesResponse__Input {
  'devices'?: (_v1_ContainerDevices__Input)[];
  'cpuIds'?: (number | string | Long)[];
  'memory'?: (_v1_ContainerMemory__Input)[];
}

export interface AllocatableResourcesResponse__Output {
  'devices': (_v1_ContainerDevices__Output)[];
  'cpuIds': (number)[];
  'memory': (_v1_ContainerMemory__Output)[];
}

// Original file: podresources/v1/api.proto

import type { ContainerDevices__Input as _v1_ContainerDevices__Input, ContainerDevices__Output as _v1_ContainerDevices__Output } from '../v1/ContainerDevices.js';
import type { ContainerMemory__Input as _v1_ContainerMemory__Input, ContainerMemory__Output as _v1_ContainerMemory__Output } from '../v1/ContainerMemory.js';
import type { DynamicResource__Input as _v1_DynamicResource__Input, DynamicResource__Output as _v1_DynamicResource__Output } from '../v1/DynamicResource.js';
import type { Long } from '@grpc/proto-loader';

export interface ContainerResources__Input {
  'name'?: (string);
  'devices'?: (_v1_ContainerDevices__Input)[];
  'cpuIds'?: (number | string | Long)[];
  'memory'?: (_v1_ContainerMemory__Input)[];
  'dynamicResources'?: (_v1_DynamicResource__Input)[];
}

export interface ContainerResources__Output {
  'name': (string);
  'devices': (_v1_ContainerDevices__Output)[];
  'cpuIds': (number)[];
  'memory': (_v1_ContainerMemory__Output)[];
  'dynamicResources': (_v1_DynamicResource__Output)[];
}

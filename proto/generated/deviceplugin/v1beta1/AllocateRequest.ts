// Original file: deviceplugin/v1beta1/api.proto

import type { ContainerAllocateRequest__Input as _v1beta1_ContainerAllocateRequest__Input, ContainerAllocateRequest__Output as _v1beta1_ContainerAllocateRequest__Output } from '../v1beta1/ContainerAllocateRequest.js';

export interface AllocateRequest__Input {
  'containerRequests'?: (_v1beta1_ContainerAllocateRequest__Input)[];
}

export interface AllocateRequest__Output {
  'containerRequests': (_v1beta1_ContainerAllocateRequest__Output)[];
}

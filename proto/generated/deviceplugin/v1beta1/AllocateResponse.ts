// Original file: deviceplugin/v1beta1/api.proto

import type { ContainerAllocateResponse__Input as _v1beta1_ContainerAllocateResponse__Input, ContainerAllocateResponse__Output as _v1beta1_ContainerAllocateResponse__Output } from '../v1beta1/ContainerAllocateResponse.js';

export interface AllocateResponse__Input {
  'containerResponses'?: (_v1beta1_ContainerAllocateResponse__Input)[];
}

export interface AllocateResponse__Output {
  'containerResponses': (_v1beta1_ContainerAllocateResponse__Output)[];
}

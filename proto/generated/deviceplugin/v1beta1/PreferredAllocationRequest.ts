// Original file: deviceplugin/v1beta1/api.proto

import type { ContainerPreferredAllocationRequest__Input as _v1beta1_ContainerPreferredAllocationRequest__Input, ContainerPreferredAllocationRequest__Output as _v1beta1_ContainerPreferredAllocationRequest__Output } from '../v1beta1/ContainerPreferredAllocationRequest.js';

export interface PreferredAllocationRequest__Input {
  'containerRequests'?: (_v1beta1_ContainerPreferredAllocationRequest__Input)[];
}

export interface PreferredAllocationRequest__Output {
  'containerRequests': (_v1beta1_ContainerPreferredAllocationRequest__Output)[];
}

// Original file: deviceplugin/v1beta1/api.proto

import type { ContainerPreferredAllocationResponse__Input as _v1beta1_ContainerPreferredAllocationResponse__Input, ContainerPreferredAllocationResponse__Output as _v1beta1_ContainerPreferredAllocationResponse__Output } from '../v1beta1/ContainerPreferredAllocationResponse.js';

export interface PreferredAllocationResponse__Input {
  'containerResponses'?: (_v1beta1_ContainerPreferredAllocationResponse__Input)[];
}

export interface PreferredAllocationResponse__Output {
  'containerResponses': (_v1beta1_ContainerPreferredAllocationResponse__Output)[];
}

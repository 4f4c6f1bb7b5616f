// Original file: dra-health/v1alpha1/api.proto

import type { DeviceHealth__Input as _v1alpha1_DeviceHealth__Input, DeviceHealth__Output as _v1alpha1_DeviceHealth__Output } from '../v1alpha1/DeviceHealth.js';

export interface NodeWatchResourcesResponse__Input {
  'devices'?: (_v1alpha1_DeviceHealth__Input)[];
}

export interface NodeWatchResourcesResponse__Output {
  'devices': (_v1alpha1_DeviceHealth__Output)[];
}

// Original file: dra-health/v1alpha1/api.proto

import type { DeviceIdentifier__Input as _v1alpha1_DeviceIdentifier__Input, DeviceIdentifier__Output as _v1alpha1_DeviceIdentifier__Output } from '../v1alpha1/DeviceIdentifier.js';
import type { HealthStatus__Input as _v1alpha1_HealthStatus__Input, HealthStatus__Output as _v1alpha1_HealthStatus__Output } from '../v1alpha1/HealthStatus.js';
import type { Long } from '@grpc/proto-loader';

export interface DeviceHealth__Input {
  'device'?: (_v1alpha1_DeviceIdentifier__Input | null);
  'health'?: (_v1alpha1_HealthStatus__Input);
  'lastUpdatedTime'?: (number | string | Long);
  'healthCheckTimeoutSeconds'?: (number | string | Long);
  'message'?: (string);
}

export interface DeviceHealth__Output {
  'device': (_v1alpha1_DeviceIdentifier__Output | null);
  'health': (_v1alpha1_HealthStatus__Output);
  'lastUpdatedTime': (number);
  'healthCheckTimeoutSeconds': (number);
  'message': (string);
}

// Original file: deviceplugin/v1beta1/api.proto

import type { Device__Input as _v1beta1_Device__Input, Device__Output as _v1beta1_Device__Output } from '../v1beta1/Device.js';

export interface ListAndWatchResponse__Input {
  'devices'?: (_v1beta1_Device__Input)[];
}

export interface ListAndWatchResponse__Output {
  'devices': (_v1beta1_Device__Output)[];
}

// Original file: deviceplugin/v1beta1/api.proto

import type { DevicePluginOptions__Input as _v1beta1_DevicePluginOptions__Input, DevicePluginOptions__Output as _v1beta1_DevicePluginOptions__Output } from '../v1beta1/DevicePluginOptions.js';

export interface RegisterRequest__Input {
  'version'?: (string);
  'endpoint'?: (string);
  'resourceName'?: (string);
  'options'?: (_v1beta1_DevicePluginOptions__Input | null);
}

export interface RegisterRequest__Output {
  'version': (string);
  'endpoint': (string);
  'resourceName': (string);
  'options': (_v1beta1_DevicePluginOptions__Output | null);
}

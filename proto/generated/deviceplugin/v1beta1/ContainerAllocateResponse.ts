// Original file: deviceplugin/v1beta1/api.proto

import type { Mount__Input as _v1beta1_Mount__Input, Mount__Output as _v1beta1_Mount__Output } from '../v1beta1/Mount.js';
import type { DeviceSpec__Input as _v1beta1_DeviceSpec__Input, DeviceSpec__Output as _v1beta1_DeviceSpec__Output } from '../v1beta1/DeviceSpec.js';
import type { CDIDevice__Input as _v1beta1_CDIDevice__Input, CDIDevice__Output as _v1beta1_CDIDevice__Output } from '../v1beta1/CDIDevice.js';

export interface ContainerAllocateResponse__Input {
  'envs'?: ({[key: string]: string});
  'mounts'?: (_v1beta1_Mount__Input)[];
  'devices'?: (_v1beta1_DeviceSpec__Input)[];
  'annotations'?: ({[key: string]: string});
  'cdiDevices'?: (_v1beta1_CDIDevice__Input)[];
}

export interface ContainerAllocateResponse__Output {
  'envs': ({[key: string]: string});
  'mounts': (_v1beta1_Mount__Output)[];
  'devices': (_v1beta1_DeviceSpec__Output)[];
  'annotations': ({[key: string]: string});
  'cdiDevices': (_v1beta1_CDIDevice__Output)[];
}

// Original file: podresources/v1/api.proto

import type { CDIDevice__Input as _v1_CDIDevice__Input, CDIDevice__Output as _v1_CDIDevice__Output } from '../v1/CDIDevice.js';

export interface ClaimResource__Input {
  'cdiDevices'?: (_v1_CDIDevice__Input)[];
  'driverName'?: (string);
  'poolName'?: (string);
  'deviceName'?: (string);
  'shareId'?: (string);
  '_shareId'?: "shareId";
}

export interface ClaimResource__Output {
  'cdiDevices': (_v1_CDIDevice__Output)[];
  'driverName': (string);
  'poolName': (string);
  'deviceName': (string);
  'shareId'?: (string);
  '_shareId'?: "shareId";
}

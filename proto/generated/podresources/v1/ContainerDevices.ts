// Original file: podresources/v1/api.proto

import type { TopologyInfo__Input as _v1_TopologyInfo__Input, TopologyInfo__Output as _v1_TopologyInfo__Output } from '../v1/TopologyInfo.js';

export interface ContainerDevices__Input {
  'resourceName'?: (string);
  'deviceIds'?: (string)[];
  'topology'?: (_v1_TopologyInfo__Input | null);
}

export interface ContainerDevices__Output {
  'resourceName': (string);
  'deviceIds': (string)[];
  'topology': (_v1_TopologyInfo__Output | null);
}

// Original file: podresources/v1/api.proto

import type { TopologyInfo__Input as _v1_TopologyInfo__Input, TopologyInfo__Output as _v1_TopologyInfo__Output } from '../v1/TopologyInfo.js';
import type { Long } from '@grpc/proto-loader';

export interface ContainerMemory__Input {
  'memoryType'?: (string);
  'size'?: (number | string | Long);
  'topology'?: (_v1_TopologyInfo__Input | null);
}

export interface ContainerMemory__Output {
  'memoryType': (string);
  'size': (number);
  'topology': (_v1_TopologyInfo__Output | null);
}

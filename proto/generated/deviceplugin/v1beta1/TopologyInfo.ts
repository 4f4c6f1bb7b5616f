// Original file: deviceplugin/v1beta1/api.proto

import type { NUMANode__Input as _v1beta1_NUMANode__Input, NUMANode__Output as _v1beta1_NUMANode__Output } from '../v1beta1/NUMANode.js';

export interface TopologyInfo__Input {
  'nodes'?: (_v1beta1_NUMANode__Input)[];
}

export interface TopologyInfo__Output {
  'nodes': (_v1beta1_NUMANode__Output)[];
}

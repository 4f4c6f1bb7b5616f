// Original file: podresources/v1/api.proto

import type { NUMANode__Input as _v1_NUMANode__Input, NUMANode__Output as _v1_NUMANode__Output } from '../v1/NUMANode.js';

export interface TopologyInfo__Input {
  'nodes'?: (_v1_NUMANode__Input)[];
}

export interface TopologyInfo__Output {
  'nodes': (_v1_NUMANode__Output)[];
}

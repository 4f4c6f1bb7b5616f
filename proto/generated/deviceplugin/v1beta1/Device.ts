// Original file: deviceplugin/v1beta1/api.proto

import type { TopologyInfo__Input as _v1beta1_TopologyInfo__Input, TopologyInfo__Output as _v1beta1_TopologyInfo__Output } from '../v1beta1/TopologyInfo.js';

export interface Device__Input {
  'ID'?: (string);
  'health'?: (string);
  'topology'?: (_v1beta1_TopologyInfo__Input | null);
}

export interface Device__Output {
  'ID': (string);
  'health': (string);
  'topology': (_v1beta1_TopologyInfo__Output | null);
}

// Original file: podresources/v1/api.proto

import type { ContainerResources__Input as _v1_ContainerResources__Input, ContainerResources__Output as _v1_ContainerResources__Output } from '../v1/ContainerResources.js';

export interface PodResources__Input {
  'name'?: (string);
  'namespace'?: (string);
  'containers'?: (_v1_ContainerResources__Input)[];
}

export interface PodResources__Output {
  'name': (string);
  'namespace': (string);
  'containers': (_v1_ContainerResources__Output)[];
}

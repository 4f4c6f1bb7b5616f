// Original file: podresources/v1/api.proto

import type { PodResources__Input as _v1_PodResources__Input, PodResources__Output as _v1_PodResources__Output } from '../v1/PodResources.js';

export interface ListPodResourcesResponse__Input {
  'podResources'?: (_v1_PodResources__Input)[];
}

export interface ListPodResourcesResponse__Output {
  'podResources': (_v1_PodResources__Output)[];
}

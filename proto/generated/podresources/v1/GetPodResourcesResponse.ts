// Original file: podresources/v1/api.proto

import type { PodResources__Input as _v1_PodResources__Input, PodResources__Output as _v1_PodResources__Output } from '../v1/PodResources.js';

export interface GetPodResourcesResponse__Input {
  'podResources'?: (_v1_PodResources__Input | null);
}

export interface GetPodResourcesResponse__Output {
  'podResources': (_v1_PodResources__Output | null);
}

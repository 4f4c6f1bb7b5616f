// Original file: podresources/v1/api.proto

import type { ClaimResource__Input as _v1_ClaimResource__Input, ClaimResource__Output as _v1_ClaimResource__Output } from '../v1/ClaimResource.js';

export interface DynamicResource__Input {
  'claimName'?: (string);
  'claimNamespace'?: (string);
  'claimResources'?: (_v1_ClaimResource__Input)[];
}

export interface DynamicResource__Output {
  'claimName': (string);
  'claimNamespace': (string);
  'claimResources': (_v1_ClaimResource__Output)[];
}

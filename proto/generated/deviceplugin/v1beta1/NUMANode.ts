// Original file: deviceplugin/v1beta1/api.proto

import type { Long } from '@grpc/proto-loader';

export interface NUMANode__Input {
  'ID'?: (number | string | Long);
}

export interface NUMANode__Output {
  'ID': (number);
}

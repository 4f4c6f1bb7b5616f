// Original file: dra/v1beta1/api.proto

import type { Device__Input as _k8s_io_kubelet_pkg_apis_dra_v1beta1_Device__Input, Device__Output as _k8s_io_kubelet_pkg_apis_dra_v1beta1_Device__Output } from '../../../../../../../k8s/io/kubelet/pkg/apis/dra/v1beta1/Device.js';

export interface NodePrepareResourceResponse__Input {
  'devices'?: (_k8s_io_kubelet_pkg_apis_dra_v1beta1_Device__Input)[];
  'error'?: (string);
}

export interface NodePrepareResourceResponse__Output {
  'devices': (_k8s_io_kubelet_pkg_apis_dra_v1beta1_Device__Output)[];
  'error': (string);
}

// Original file: dra/v1/api.proto

import type { Claim__Input as _k8s_io_kubelet_pkg_apis_dra_v1_Claim__Input, Claim__Output as _k8s_io_kubelet_pkg_apis_dra_v1_Claim__Output } from '../../../../../../../k8s/io/kubelet/pkg/apis/dra/v1/Claim.js';

export interface NodeUnprepareResourcesRequest__Input {
  'claims'?: (_k8s_io_kubelet_pkg_apis_dra_v1_Claim__Input)[];
}

export interface NodeUnprepareResourcesRequest__Output {
  'claims': (_k8s_io_kubelet_pkg_apis_dra_v1_Claim__Output)[];
}

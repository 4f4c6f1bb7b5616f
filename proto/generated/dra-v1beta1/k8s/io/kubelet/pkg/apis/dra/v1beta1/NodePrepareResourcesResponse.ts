// Original file: dra/v1beta1/api.proto

import type { NodePrepareResourceResponse__Input as _k8s_io_kubelet_pkg_apis_dra_v1beta1_NodePrepareResourceResponse__Input, NodePrepareResourceResponse__Output as _k8s_io_kubelet_pkg_apis_dra_v1beta1_NodePrepareResourceResponse__Output } from '../../../../../../../k8s/io/kubelet/pkg/apis/dra/v1beta1/NodePrepareResourceResponse.js';

export interface NodePrepareResourcesResponse__Input {
  'claims'?: ({[key: string]: _k8s_io_kubelet_pkg_apis_dra_v1beta1_NodePrepareResourceResponse__Input});
}

export interface NodePrepareResourcesResponse__Output {
  'claims': ({[key: string]: _k8s_io_kubelet_pkg_apis_dra_v1beta1_NodePrepareResourceResponse__Output});
}

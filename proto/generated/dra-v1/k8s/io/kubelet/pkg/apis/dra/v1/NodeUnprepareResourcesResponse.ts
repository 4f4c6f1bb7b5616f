// Original file: dra/v1/api.proto

import type { NodeUnprepareResourceResponse__Input as _k8s_io_kubelet_pkg_apis_dra_v1_NodeUnprepareResourceResponse__Input, NodeUnprepareResourceResponse__Output as _k8s_io_kubelet_pkg_apis_dra_v1_NodeUnprepareResourceResponse__Output } from '../../../../../../../k8s/io/kubelet/pkg/apis/dra/v1/NodeUnprepareResourceResponse.js';

export interface NodeUnprepareResourcesResponse__Input {
  'claims'?: ({[key: string]: _k8s_io_kubelet_pkg_apis_dra_v1_NodeUnprepareResourceResponse__Input});
}

export interface NodeUnprepareResourcesResponse__Output {
  'claims': ({[key: string]: _k8s_io_kubelet_pkg_apis_dra_v1_NodeUnprepareResourceResponse__Output});
}

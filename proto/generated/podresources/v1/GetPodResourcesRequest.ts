// Original file: podresources/v1/api.proto


export interface GetPodResourcesRequest__Input {
  'podName'?: (string);
  'podNamespace'?: (string);
}

export interface GetPodResourcesRequest__Output {
  'podName': (string);
  'podNamespace': (string);
}

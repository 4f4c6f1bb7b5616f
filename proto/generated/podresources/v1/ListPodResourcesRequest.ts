// Original file: podresources/v1/api.proto


export interface ListPodResourcesRequest__Input {
}

export interface ListPodResourcesRequest__Output {
}

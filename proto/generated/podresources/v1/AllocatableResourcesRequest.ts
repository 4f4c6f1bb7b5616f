// Original file: podresources/v1/api.proto


export interface AllocatableResourcesRequest__Input {
}

export interface AllocatableResourcesRequest__Output {
}

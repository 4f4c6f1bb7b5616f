// Original file: dra-health/v1alpha1/api.proto


export interface NodeWatchResourcesRequest__Input {
}

export interface NodeWatchResourcesRequest__Output {
}

// Original file: deviceplugin/v1beta1/api.proto


export interface PreStartContainerResponse__Input {
}

export interface PreStartContainerResponse__Output {
}

// Original file: deviceplugin/v1beta1/api.proto


export interface Empty__Input {
}

export interface Empty__Output {
}

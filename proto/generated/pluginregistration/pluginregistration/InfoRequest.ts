// Original file: pluginregistration/v1/api.proto


export interface InfoRequest__Input {
}

export interface InfoRequest__Output {
}

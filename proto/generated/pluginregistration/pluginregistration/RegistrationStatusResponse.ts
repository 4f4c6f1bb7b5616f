// Original file: pluginregistration/v1/api.proto


export interface RegistrationStatusResponse__Input {
}

export interface RegistrationStatusResponse__Output {
}

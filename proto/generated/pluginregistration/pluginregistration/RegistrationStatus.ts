// Original file: pluginregistration/v1/api.proto


export interface RegistrationStatus__Input {
  'pluginRegistered'?: (boolean);
  'error'?: (string);
}

export interface RegistrationStatus__Output {
  'pluginRegistered': (boolean);
  'error': (string);
}

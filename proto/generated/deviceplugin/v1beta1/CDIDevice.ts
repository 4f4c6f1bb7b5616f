// Original file: deviceplugin/v1beta1/api.proto


export interface CDIDevice__Input {
  'name'?: (string);
}

export interface CDIDevice__Output {
  'name': (string);
}

// Original file: podresources/v1/api.proto


export interface CDIDevice__Input {
  'name'?: (string);
}

export interface CDIDevice__Output {
  'name': (string);
}

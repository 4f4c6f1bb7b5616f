// Original file: deviceplugin/v1beta1/api.proto


export interface Mount__Input {
  'containerPath'?: (string);
  'hostPath'?: (string);
  'readOnly'?: (boolean);
}

export interface Mount__Output {
  'containerPath': (string);
  'hostPath': (string);
  'readOnly': (boolean);
}

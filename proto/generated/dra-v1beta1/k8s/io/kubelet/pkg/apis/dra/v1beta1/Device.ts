// Original file: dra/v1beta1/api.proto


export interface Device__Input {
  'requestNames'?: (string)[];
  'poolName'?: (string);
  'deviceName'?: (string);
  'cdiDeviceIds'?: (string)[];
}

export interface Device__Output {
  'requestNames': (string)[];
  'poolName': (string);
  'deviceName': (string);
  'cdiDeviceIds': (string)[];
}

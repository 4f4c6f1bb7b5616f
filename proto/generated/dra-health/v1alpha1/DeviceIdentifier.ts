// Original file: dra-health/v1alpha1/api.proto


export interface DeviceIdentifier__Input {
  'poolName'?: (string);
  'deviceName'?: (string);
}

export interface DeviceIdentifier__Output {
  'poolName': (string);
  'deviceName': (string);
}

// Original file: deviceplugin/v1beta1/api.proto


export interface DevicePluginOptions__Input {
  'preStartRequired'?: (boolean);
  'getPreferredAllocationAvailable'?: (boolean);
}

export interface DevicePluginOptions__Output {
  'preStartRequired': (boolean);
  'getPreferredAllocationAvailable': (boolean);
}

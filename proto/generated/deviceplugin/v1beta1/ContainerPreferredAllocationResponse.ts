// Original file: deviceplugin/v1beta1/api.proto


export interface ContainerPreferredAllocationResponse__Input {
  'deviceIDs'?: (string)[];
}

export interface ContainerPreferredAllocationResponse__Output {
  'deviceIDs': (string)[];
}

// Original file: deviceplugin/v1beta1/api.proto


export interface ContainerAllocateRequest__Input {
  'devicesIds'?: (string)[];
}

export interface ContainerAllocateRequest__Output {
  'devicesIds': (string)[];
}

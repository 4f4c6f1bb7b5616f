// Original file: deviceplugin/v1beta1/api.proto


export interface PreStartContainerRequest__Input {
  'devicesIds'?: (string)[];
}

export interface PreStartContainerRequest__Output {
  'devicesIds': (string)[];
}

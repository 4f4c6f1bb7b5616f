// Original file: dra/v1/api.proto


export interface NodeUnprepareResourceResponse__Input {
  'error'?: (string);
}

export interface NodeUnprepareResourceResponse__Output {
  'error': (string);
}

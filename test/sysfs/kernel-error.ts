// The error every part of the fake kernel throws where the real kernel refuses: an errno name.

/** A refused write or open, with the errno name the kernel would return (EBUSY, ENOENT, ...). */
export class KernelError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.code = code;
    this.name = 'KernelError';
  }
}

export default async function globalTeardown(): Promise<void> {
  await globalThis.__VIO_CONTROL_PLANE__?.stop();
}

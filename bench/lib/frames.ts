/**
 * A baseline's frame of the app's size: the bare markup, padded with one more
 * data line so that both write the same bytes per frame (the app's message
 * fragment carries its forms), encoded once for every subscriber.
 */
export function paddedFrame(head: string, tail: string, bytes: number): Buffer {
  const padding = Math.max(0, bytes - Buffer.byteLength(head) - Buffer.byteLength(tail) - 'data: \n'.length)
  return Buffer.from(`${head}data: ${' '.repeat(padding)}\n${tail}`)
}

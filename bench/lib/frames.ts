/**
 * A baseline's frame: the app's own frame as a subscriber received it, with
 * its id and its stamped text swapped. The same bytes and the same
 * characters, not only the same size: the app's fragment carries emoji (its
 * reaction buttons), and the subscribers' UTF-8 decoding took five times as
 * long for those frames as for ASCII padding of the same size (see P3 in the
 * README), which counted against the app what was the clients' work.
 */
export interface FrameSample {
  /** The whole frame, `id:` line to blank line. */
  text: string
  /** The stamp in it (`t=<ms>`), which a baseline replaces with its post's. */
  stamp: string
}

/** The env a baseline's process reads its frame from. */
export const FRAME_ENV = 'BENCH_FRAME'

/** Frames like the sample, encoded once per post for all its subscribers. */
export function frameMaker(sample: FrameSample): (id: number, content: string) => Buffer {
  const [before, ...after] = sample.text.replace(/^id: \d+\n/m, '').split(sample.stamp)
  if (after.length === 0) throw new Error('the frame sample does not contain its stamp')
  return (id, content) => Buffer.from(`id: ${id}\n${before}${content}${after.join(content)}`)
}

/** The sample a baseline's process was started with. */
export function sampleFromEnv(): FrameSample {
  const json = process.env[FRAME_ENV]
  if (!json) throw new Error(`${FRAME_ENV} is not set: the bench passes the app's frame to its baselines`)
  return JSON.parse(json) as FrameSample
}

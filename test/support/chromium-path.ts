import { accessSync, constants, statSync } from 'node:fs'

/** The Chromium the browser tests drive: CHROMIUM_PATH, else Debian's package. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/**
 * Why the browser tests cannot run on this machine, as one line that says
 * what to do, or undefined when they can. Checked once before any test runs
 * (test/run.ts): otherwise every browser test fails on its own with the same
 * launch error, after everything else has run.
 */
export function missingChromium(path = CHROMIUM_PATH): string | undefined {
  try {
    accessSync(path, constants.X_OK)
    if (statSync(path).isFile()) return undefined
  } catch {
    // Missing or not executable: said below.
  }
  if (process.env.CHROMIUM_PATH !== undefined) {
    return `The browser tests need Chromium, and CHROMIUM_PATH=${path} is not an executable: point it at a Chromium or Chrome binary, or unset it to use /usr/bin/chromium (apt-get install -y chromium, as .ci/browser does).`
  }
  return `The browser tests need Chromium at ${path}, and there is none: install it (apt-get install -y chromium, as .ci/browser does) or set CHROMIUM_PATH to a Chromium or Chrome binary.`
}

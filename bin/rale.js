#!/usr/bin/env node
// The `rale` command. It runs the compiled bundle (bin/build.js: built on the
// first start and whenever a source changed), or, when no bundle can be built
// or written, the TypeScript sources through tsx's loader.
import { pathToFileURL } from 'node:url';
import { ensureBundle } from './build.js';

const { bundle, problem } = await ensureBundle();
if (bundle !== null) {
  process.setSourceMapsEnabled(true); // stack traces name sidecar/src/*.ts lines, not the bundle's
  await import(pathToFileURL(bundle).href);
} else {
  if (process.env.RALE_QUIET_BUILD !== '1') process.stderr.write(`rale: running from the TypeScript sources through tsx: ${problem} (build the bundle with \`npm run build\` as a user who can write there)\n`);
  const { register } = await import('tsx/esm/api');
  register();
  await import('../sidecar/src/cli/rale.ts');
}

// The sidecar's compiled build: one ESM bundle of sidecar/src/cli/rale.ts and
// everything it imports from this repository (the built-in bridges included),
// made by esbuild. Dependencies stay in node_modules (not bundled).
//
// Why: run from the TypeScript sources, every sidecar process carries tsx's
// loader (a module-hooks worker thread with its own V8 heap, and per-file
// transpiling at start). The bundle starts faster and uses about 30 MB less
// memory under load (test/bench, README "Performance").
//
// The bundle is never stale: `ensureBundle()` (called by bin/rale.js at every
// start) compares the bundle with every input esbuild recorded for it and
// rebuilds when one changed, was added to the graph or is gone. `npm run build`
// (`node bin/build.js`) builds ahead of time, for read-only installs (docker/).
//
// Layout invariant: the bundle lives at dist/sidecar/cli/rale.mjs, as deep as
// sidecar/src/cli/rale.ts, because modules find the repository's folders
// (sql/migrations, bin/, bridges/) relative to import.meta.url, three levels up.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const ENTRY = path.join(ROOT, 'sidecar/src/cli/rale.ts');
export const DEFAULT_OUT_DIR = path.join(ROOT, 'dist/sidecar/cli');

/** Paths of the bundle and of the record of its inputs in `outDir`. */
export function bundlePaths(outDir = DEFAULT_OUT_DIR) {
  return { bundle: path.join(outDir, 'rale.mjs'), inputs: path.join(outDir, 'rale.inputs.json') };
}

/**
 * Why the bundle in `outDir` must be rebuilt, or null when it is current: it
 * is current when it exists and no input (as recorded at its build, by
 * esbuild's metafile) is newer than it or gone, and it was built by this
 * esbuild version with the same entry.
 */
export function staleReason(outDir = DEFAULT_OUT_DIR, esbuildVersion = null) {
  const { bundle, inputs } = bundlePaths(outDir);
  let builtAt;
  let record;
  try {
    builtAt = fs.statSync(bundle).mtimeMs;
    record = JSON.parse(fs.readFileSync(inputs, 'utf8'));
  } catch {
    return 'no bundle yet';
  }
  if (record.entry !== ENTRY) return `built from ${record.entry}`;
  if (esbuildVersion !== null && record.esbuild !== esbuildVersion) return `built by esbuild ${record.esbuild}`;
  for (const file of record.files ?? []) {
    let stat;
    try {
      stat = fs.statSync(path.join(ROOT, file));
    } catch {
      return `${file} is gone`;
    }
    if (stat.mtimeMs > builtAt) return `${file} changed`;
  }
  return null;
}

/**
 * Builds the bundle into `outDir`. Concurrent builders (three sidecars
 * starting at once) each write their own temporary files and rename them into
 * place: a reader sees an old or a new bundle, never half of one. The bundle
 * is renamed last, after its inputs record, so that its mtime is the newest.
 */
export async function build(outDir = DEFAULT_OUT_DIR) {
  const esbuild = await import('esbuild');
  fs.mkdirSync(outDir, { recursive: true });
  const { bundle, inputs } = bundlePaths(outDir);
  const tmp = `.tmp-${process.pid}-${Date.now()}`;
  const result = await esbuild.build({
    entryPoints: [ENTRY],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    sourcemap: 'linked', // rale.mjs.map beside it: stack traces name the .ts sources (bin/rale.js enables source maps)
    metafile: true,
    write: false,
    outfile: bundle, // where the output would go: fixes the map's relative paths; written below
    logLevel: 'silent',
    absWorkingDir: ROOT,
  });
  const code = result.outputFiles.find((f) => f.path === bundle);
  const map = result.outputFiles.find((f) => f.path === `${bundle}.map`);
  if (code === undefined || map === undefined) throw new Error(`esbuild wrote ${result.outputFiles.map((f) => f.path).join(', ')}, not ${bundle} and its map`);
  const files = Object.keys(result.metafile.inputs).filter((f) => !f.startsWith('node_modules/'));
  fs.writeFileSync(inputs + tmp, JSON.stringify({ entry: ENTRY, esbuild: esbuild.version, files }, null, 1));
  fs.writeFileSync(`${bundle}.map${tmp}`, map.contents);
  fs.writeFileSync(bundle + tmp, code.contents);
  fs.renameSync(inputs + tmp, inputs);
  fs.renameSync(`${bundle}.map${tmp}`, `${bundle}.map`);
  fs.renameSync(bundle + tmp, bundle);
  return bundle;
}

/**
 * The bundle to run, built first if it is missing or stale. Returns null
 * (with the reason) when it cannot be built or written (no esbuild, a
 * read-only install that was not built ahead): the caller then runs the
 * sources through tsx.
 */
export async function ensureBundle(outDir = DEFAULT_OUT_DIR) {
  let version = null;
  try {
    version = (await import('esbuild')).version;
  } catch {
    // Without esbuild a current bundle still runs; a stale one cannot be rebuilt.
  }
  const reason = staleReason(outDir, version);
  if (reason === null) return { bundle: bundlePaths(outDir).bundle, built: false, problem: null };
  if (version === null) return { bundle: null, built: false, problem: `the bundle needs a build (${reason}) and esbuild is not installed` };
  try {
    return { bundle: await build(outDir), built: true, problem: null };
  } catch (err) {
    return { bundle: null, built: false, problem: `building ${bundlePaths(outDir).bundle} failed (${reason}): ${err.message}` };
  }
}

/** The library's entry (node-raft-shaped `Node`, the driver, storage, transports) and its bundle. */
export const LIBRARY_ENTRY = path.join(ROOT, 'sidecar/src/index.ts');
export const LIBRARY_BUNDLE = path.join(ROOT, 'dist/sidecar/lib/index.mjs');

/**
 * The library as plain JavaScript, so that `import { Node } from 'rale'`
 * (package.json "exports") runs in Node without a TypeScript loader. Same
 * layout invariant as the sidecar's bundle (three levels below the
 * repository: modules find sql/migrations and bridges/ from import.meta.url).
 * Its type declarations come from `tsc -p tsconfig.types.json` (`npm run
 * build`), into dist/types.
 */
export async function buildLibrary(outFile = LIBRARY_BUNDLE) {
  const esbuild = await import('esbuild');
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  await esbuild.build({
    entryPoints: [LIBRARY_ENTRY],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    sourcemap: 'linked',
    outfile: outFile,
    logLevel: 'silent',
    absWorkingDir: ROOT,
  });
  return outFile;
}

if (process.argv[1] !== undefined && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const bundle = await build();
  const library = await buildLibrary();
  console.log(`built ${path.relative(process.cwd(), bundle)} and ${path.relative(process.cwd(), library)}`);
}

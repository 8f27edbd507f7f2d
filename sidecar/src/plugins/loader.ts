/**
 * Finds and checks bridge modules: a built-in name (`phalanx` is
 * bridges/phalanx/index.ts of this package), a path, or a package name.
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import { RaleError } from '../errors.ts';
import { BRIDGE_API_VERSION, type BridgeModule } from './bridge-api.ts';

export const BRIDGES_DIR = fileURLToPath(new URL('../../../bridges/', import.meta.url));

/**
 * The built-in bridges, imported by literal paths so that the sidecar's
 * bundle (bin/build.js) carries them and shares its modules (RaleError,
 * codecs) with them. Keep in step with the folders of bridges/ (a test
 * checks).
 */
const BUILT_IN: Record<string, () => Promise<Record<string, unknown>>> = {
  clusterconsensus: () => import('../../../bridges/clusterconsensus/index.ts'),
  coordinode: () => import('../../../bridges/coordinode/index.ts'),
  phalanx: () => import('../../../bridges/phalanx/index.ts'),
};

/** Names of the built-in bridges. */
export function builtInBridges(): string[] {
  return Object.keys(BUILT_IN).sort();
}

/** What a bridge configuration entry names, as an import specifier. */
export function bridgeSpecifier(ref: { name?: string; module?: string }): string {
  if (ref.name !== undefined) {
    const known = builtInBridges();
    if (!known.includes(ref.name)) {
      throw new RaleError('INVALID_ARGUMENT', `there is no built-in bridge named ${JSON.stringify(ref.name)}; the built-in bridges are ${known.join(', ') || '(none)'}; for your own, give "module": a path or a package name`);
    }
    return pathToFileURL(`${BRIDGES_DIR}${ref.name}/index.ts`).href;
  }
  const module = ref.module as string;
  return module.startsWith('/') ? pathToFileURL(module).href : module;
}

/**
 * Imports a module named by path or package. Run from the bundle, Node has no
 * TypeScript loader: a `.ts` bridge gets tsx's, registered on first need
 * (before the import: Node remembers a failed import of a URL).
 */
let tsxRegistered = false;
async function importModule(specifier: string): Promise<Record<string, unknown>> {
  if (/\.[cm]?tsx?$/.test(specifier) && !tsxRegistered && !typeScriptLoaded()) {
    const { register } = await import('tsx/esm/api');
    register();
    tsxRegistered = true;
  }
  return (await import(specifier)) as Record<string, unknown>;
}

/** True when this very module runs from TypeScript source (so a loader for .ts is in place already). */
function typeScriptLoaded(): boolean {
  return import.meta.url.endsWith('.ts');
}

/** Imports a bridge module and checks that it implements this version of the interface. */
export async function loadBridgeModule(ref: { name?: string; module?: string }): Promise<BridgeModule> {
  const specifier = bridgeSpecifier(ref);
  const label = ref.name ?? ref.module;
  let imported: Record<string, unknown>;
  try {
    const builtIn = ref.name !== undefined ? BUILT_IN[ref.name] : undefined;
    imported = builtIn !== undefined ? await builtIn() : await importModule(specifier);
  } catch (err) {
    throw new RaleError('INVALID_ARGUMENT', `bridge ${label}: cannot load ${specifier}: ${(err as Error).message}`);
  }
  const candidate = (imported.bridge ?? imported.default) as Partial<BridgeModule> | undefined;
  if (candidate === undefined || candidate === null || typeof candidate !== 'object') {
    throw new RaleError('INVALID_ARGUMENT', `bridge ${label}: the module exports neither \`bridge\` nor a default export; export a BridgeModule ({apiVersion, name, create})`);
  }
  if (candidate.apiVersion !== BRIDGE_API_VERSION) {
    throw new RaleError('INVALID_ARGUMENT', `bridge ${label}: it implements bridge API version ${String(candidate.apiVersion)}, this rale implements version ${BRIDGE_API_VERSION}`);
  }
  if (typeof candidate.name !== 'string' || candidate.name === '' || typeof candidate.create !== 'function') {
    throw new RaleError('INVALID_ARGUMENT', `bridge ${label}: a BridgeModule needs a non-empty name and a create(ctx) function`);
  }
  return candidate as BridgeModule;
}

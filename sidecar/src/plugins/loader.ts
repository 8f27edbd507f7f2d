/**
 * Finds and checks bridge modules: a built-in name (`phalanx` is
 * bridges/phalanx/index.ts of this package), a path, or a package name.
 */
import fs from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { RaleError } from '../errors.ts';
import { BRIDGE_API_VERSION, type BridgeModule } from './bridge-api.ts';

export const BRIDGES_DIR = fileURLToPath(new URL('../../../bridges/', import.meta.url));

/** Built-in bridges: the folders of bridges/ that have an index.ts. */
export function builtInBridges(): string[] {
  try {
    return fs
      .readdirSync(BRIDGES_DIR, { withFileTypes: true })
      .filter((d) => d.isDirectory() && fs.existsSync(`${BRIDGES_DIR}${d.name}/index.ts`))
      .map((d) => d.name)
      .sort();
  } catch {
    return [];
  }
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

/** Imports a bridge module and checks that it implements this version of the interface. */
export async function loadBridgeModule(ref: { name?: string; module?: string }): Promise<BridgeModule> {
  const specifier = bridgeSpecifier(ref);
  const label = ref.name ?? ref.module;
  let imported: Record<string, unknown>;
  try {
    imported = (await import(specifier)) as Record<string, unknown>;
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

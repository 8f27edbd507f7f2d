#!/usr/bin/env node
// The `rale` command: rale ships TypeScript sources and runs them through tsx's loader.
import { register } from 'tsx/esm/api';

register();
await import('../sidecar/src/cli/rale.ts');

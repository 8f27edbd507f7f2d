/**
 * A small structural checker for the API's OpenAPI 3.1 document: no
 * validator library is installed, and the document uses a narrow subset of
 * JSON Schema. The checker refuses any keyword it does not implement, so the
 * document cannot grow a constraint that tests would silently ignore.
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export type Schema = Record<string, unknown>;

export interface OpenApiDocument {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema>; parameters?: Record<string, unknown> };
}

export interface Operation {
  operationId: string;
  security?: unknown[];
  parameters?: unknown[];
  requestBody?: { content: Record<string, { schema: Schema; example?: unknown }> };
  responses: Record<string, { description: string; content?: Record<string, { schema: Schema }> }>;
}

export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'] as const;

export function loadSpec(): OpenApiDocument {
  const file = fileURLToPath(new URL('../../sidecar/src/http/openapi.json', import.meta.url));
  return JSON.parse(fs.readFileSync(file, 'utf8')) as OpenApiDocument;
}

/** Every (method, path template) the document describes. */
export function operations(spec: OpenApiDocument): Array<{ method: string; path: string; op: Operation }> {
  return Object.entries(spec.paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => (HTTP_METHODS as readonly string[]).includes(method))
      .map(([method, op]) => ({ method, path, op })),
  );
}

/** The path template of the document that `path` (under the server base, without query) falls under. */
export function templateOf(spec: OpenApiDocument, path: string): string | undefined {
  const segments = path.split('/').filter(Boolean).map(decodeURIComponent);
  return Object.keys(spec.paths).find((template) => {
    const t = template.split('/').filter(Boolean);
    return t.length === segments.length && t.every((seg, k) => /^\{\w+\}$/.test(seg) || seg === segments[k]);
  });
}

const KNOWN = new Set([
  '$ref', 'type', 'properties', 'required', 'additionalProperties', 'items', 'enum', 'const',
  'minimum', 'maximum', 'minLength', 'maxLength', 'pattern', 'description', 'example',
]);

function typeOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function resolve(spec: OpenApiDocument, ref: string): Schema {
  const match = /^#\/components\/schemas\/(\w+)$/.exec(ref);
  const schema = match === null ? undefined : spec.components.schemas[match[1] as string];
  if (schema === undefined) throw new Error(`unresolvable $ref ${ref}`);
  return schema;
}

/** Throws when `schema`, or any schema nested in it, uses a keyword `check` does not implement. */
export function assertCheckable(schema: Schema, at = '$'): void {
  for (const keyword of Object.keys(schema)) {
    if (!KNOWN.has(keyword)) throw new Error(`the checker does not implement the keyword "${keyword}" (at ${at})`);
  }
  for (const [name, property] of Object.entries((schema.properties ?? {}) as Record<string, Schema>)) assertCheckable(property, `${at}.${name}`);
  if (typeof schema.items === 'object' && schema.items !== null) assertCheckable(schema.items as Schema, `${at}[]`);
  if (typeof schema.additionalProperties === 'object' && schema.additionalProperties !== null) assertCheckable(schema.additionalProperties as Schema, `${at}.*`);
}

/** The list of mismatches between `value` and `schema` (empty when it conforms). */
export function check(spec: OpenApiDocument, schema: Schema, value: unknown, at = '$'): string[] {
  for (const keyword of Object.keys(schema)) {
    if (!KNOWN.has(keyword)) throw new Error(`the checker does not implement the keyword "${keyword}" (at ${at})`);
  }
  if (typeof schema.$ref === 'string') return check(spec, resolve(spec, schema.$ref), value, at);
  const errors: string[] = [];
  const actual = typeOf(value);
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? (schema.type as string[]) : [schema.type as string];
    const ok = types.some((t) => t === actual || (t === 'number' && actual === 'integer'));
    if (!ok) return [`${at}: expected ${types.join(' or ')}, got ${actual}`];
  }
  if (schema.const !== undefined && JSON.stringify(schema.const) !== JSON.stringify(value)) errors.push(`${at}: expected ${JSON.stringify(schema.const)}`);
  if (Array.isArray(schema.enum) && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    errors.push(`${at}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
  }
  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) errors.push(`${at}: ${value} < minimum ${schema.minimum}`);
    if (typeof schema.maximum === 'number' && value > schema.maximum) errors.push(`${at}: ${value} > maximum ${schema.maximum}`);
  }
  if (typeof value === 'string') {
    if (typeof schema.minLength === 'number' && value.length < schema.minLength) errors.push(`${at}: shorter than ${schema.minLength}`);
    if (typeof schema.maxLength === 'number' && value.length > schema.maxLength) errors.push(`${at}: longer than ${schema.maxLength}`);
    if (typeof schema.pattern === 'string' && !new RegExp(schema.pattern, 'u').test(value)) errors.push(`${at}: ${JSON.stringify(value)} does not match ${schema.pattern}`);
  }
  if (actual === 'array' && schema.items !== undefined) {
    (value as unknown[]).forEach((item, k) => errors.push(...check(spec, schema.items as Schema, item, `${at}[${k}]`)));
  }
  if (actual === 'object') {
    const object = value as Record<string, unknown>;
    const properties = (schema.properties ?? {}) as Record<string, Schema>;
    for (const name of (schema.required ?? []) as string[]) if (!(name in object)) errors.push(`${at}: missing required "${name}"`);
    for (const [name, v] of Object.entries(object)) {
      const property = properties[name];
      if (property !== undefined) errors.push(...check(spec, property, v, `${at}.${name}`));
      else if (schema.additionalProperties === false) errors.push(`${at}: undocumented property "${name}"`);
      else if (typeof schema.additionalProperties === 'object' && schema.additionalProperties !== null) {
        errors.push(...check(spec, schema.additionalProperties as Schema, v, `${at}.${name}`));
      }
    }
  }
  return errors;
}

/**
 * Checks one answer against the document: its status must be documented
 * for the operation, and a JSON body must match that response's schema.
 * Returns the mismatches.
 */
export function checkResponse(spec: OpenApiDocument, method: string, template: string, status: number, contentType: string, body: unknown): string[] {
  const op = spec.paths[template]?.[method.toLowerCase()];
  if (op === undefined) return [`${method} ${template} is not in the document`];
  const response = op.responses[String(status)];
  if (response === undefined) return [`${method} ${template} answered ${status}, which the document does not list (${Object.keys(op.responses).join(', ')})`];
  const media = Object.keys(response.content ?? {});
  const mediaType = contentType.split(';')[0]?.trim() ?? '';
  if (!media.includes(mediaType)) return [`${method} ${template} ${status}: content type ${contentType}, documented ${media.join(', ')}`];
  const schema = response.content?.[mediaType]?.schema;
  return schema === undefined ? [] : check(spec, schema, body).map((e) => `${method} ${template} ${status}: ${e}`);
}

/**
 * Type parsing for rale's own pg pools: int8 as a JS number (indexes and
 * terms stay below 2^53, see core/types.ts). Given per pool, so the
 * process-wide node-postgres defaults are left alone for embedding programs.
 */
import pg from 'pg';

const INT8_OID = 20;

function parseInt8(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new Error(`The bigint ${text} read from PostgreSQL exceeds 2^53 and cannot be a rale index or term.`);
  return n;
}

export const pgTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary' ? parseInt8 : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

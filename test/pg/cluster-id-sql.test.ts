/**
 * The cluster id in SQL (0006_cluster_id.sql), without a sidecar:
 * rale.cluster_id() for DBAs and rale.set_cluster_id(), the way out for a
 * cluster upgraded after every log was compacted past its first entry.
 */
import test from 'ava';
import pg from 'pg';
import { migrate } from '../../sidecar/src/pg/migrate.ts';
import { PgLogStorage } from '../../sidecar/src/storage/pg-log.ts';
import { useScratchServer } from './support.ts';

const scratch = useScratchServer(test, 'clusteridsql');

async function connect(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

async function sqlError(c: pg.Client, text: string, values: unknown[] = []): Promise<{ code: string; message: string; hint?: string }> {
  try {
    await c.query(text, values);
  } catch (err) {
    return err as { code: string; message: string; hint?: string };
  }
  throw new Error(`expected ${text} to fail`);
}

test.serial('rale.set_cluster_id stores an id where there is none, refuses bad ones and never changes one', async (t) => {
  const url = await scratch().createDatabase('set_id');
  await migrate(url);
  const c = await connect(url);
  const storage = new PgLogStorage({ connection: url });
  try {
    t.is((await c.query('SELECT rale.cluster_id() AS id')).rows[0].id, null);
    for (const bad of [null, '', 'ABCDEF0123456789', '0123456789abcde', '0123456789abcdefg', "x'; DROP TABLE rale.kv; --"]) {
      const err = await sqlError(c, 'SELECT rale.set_cluster_id($1)', [bad]);
      t.is(err.code, '22023', String(bad));
      t.regex(err.message, /a cluster id is 16 lowercase hex digits/);
      t.regex(err.hint ?? '', /set_cluster_id\(left\(md5/);
    }
    t.is((await c.query('SELECT rale.cluster_id() AS id')).rows[0].id, null, 'nothing stored by a refused call');

    t.is((await c.query(`SELECT rale.set_cluster_id('00aa11bb22cc33dd') AS id`)).rows[0].id, '00aa11bb22cc33dd');
    t.is((await c.query('SELECT rale.cluster_id() AS id')).rows[0].id, '00aa11bb22cc33dd');
    t.is(await storage.clusterId(), '00aa11bb22cc33dd', 'what the sidecar reads at its next start');
    t.is((await c.query(`SELECT rale.set_cluster_id('00aa11bb22cc33dd') AS id`)).rows[0].id, '00aa11bb22cc33dd', 'the same id again: no change, no error');
    const changed = await sqlError(c, `SELECT rale.set_cluster_id('ffffffffffffffff')`);
    t.is(changed.code, '55000');
    t.regex(changed.message, /already belongs to cluster 00aa11bb22cc33dd; a cluster id never changes/);
    t.is((await c.query('SELECT rale.cluster_id() AS id')).rows[0].id, '00aa11bb22cc33dd');
  } finally {
    await storage.close();
    await c.end();
  }
});

test.serial('only rale_admin may set the cluster id; rale_client may read it; PUBLIC neither', async (t) => {
  const url = await scratch().createDatabase('set_id_roles');
  await migrate(url);
  const c = await connect(url);
  try {
    await c.query('DROP ROLE IF EXISTS cid_app; DROP ROLE IF EXISTS cid_dba; DROP ROLE IF EXISTS cid_nobody');
    await c.query('CREATE ROLE cid_app; GRANT rale_client TO cid_app; CREATE ROLE cid_dba; GRANT rale_admin TO cid_dba; CREATE ROLE cid_nobody');
    const as = async (role: string, text: string) => {
      await c.query(`SET ROLE ${role}`);
      try {
        return await c.query(text).then(
          (r) => ({ ok: true as const, rows: r.rows }),
          (e: { code: string }) => ({ ok: false as const, code: e.code }),
        );
      } finally {
        await c.query('RESET ROLE');
      }
    };
    t.like(await as('cid_app', 'SELECT rale.cluster_id()'), { ok: true });
    t.like(await as('cid_app', `SELECT rale.set_cluster_id('0123456789abcdef')`), { ok: false, code: '42501' });
    t.like(await as('cid_nobody', 'SELECT rale.cluster_id()'), { ok: false, code: '42501' });
    t.like(await as('cid_dba', `SELECT rale.set_cluster_id('0123456789abcdef')`), { ok: true });
    await c.query('DROP OWNED BY cid_app, cid_dba, cid_nobody; DROP ROLE cid_app; DROP ROLE cid_dba; DROP ROLE cid_nobody');
  } finally {
    await c.end();
  }
});

// The image's HEALTHCHECK: exits 0 when the sidecar's GET /api/v1/health answers 200, else 1.
// Plain JavaScript (no tsx), so that a check every few seconds costs little.
//
// The URL is $RALE_HEALTHCHECK_URL if set, else http://127.0.0.1:<port>/api/v1/health with the
// port of $RALE_API_LISTEN (default 8400). What it prints lands in `docker inspect`: on 503 that
// is the API's list of reasons (no leader, PostgreSQL does not answer, ...).
const listen = process.env.RALE_API_LISTEN || '127.0.0.1:8400';
const port = /:(\d+)$/.exec(listen)?.[1] ?? '8400';
const url = process.env.RALE_HEALTHCHECK_URL || `http://127.0.0.1:${port}/api/v1/health`;

try {
  const response = await fetch(url, { signal: AbortSignal.timeout(4_000) });
  const body = await response.text();
  if (response.ok) process.exit(0);
  console.log(`unhealthy: ${url} answered ${response.status}: ${body.slice(0, 1_000)}`);
  process.exit(1);
} catch (err) {
  console.log(`unhealthy: cannot reach ${url}: ${err?.cause?.code ?? err?.message ?? String(err)}`);
  process.exit(1);
}

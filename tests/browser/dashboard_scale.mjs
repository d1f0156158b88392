// The dashboard with thousands of servers, in Debian's headless Chromium (run by
// tests/dashboard.rs):
//
//   node tests/browser/dashboard_scale.mjs <admin URL> --backends 1000 --servers 10000
//        --search be0777-s3 --screenshot target/dashboard-10k.png
//
// Loads the page and waits (bounded) until every backend is on it; then checks that
// the backends start closed (no server row on the page), the search box is there and the
// header counts every server; takes a screenshot; types the --search server's name and
// waits until its row is shown, alone; takes a second screenshot (<name>-search.png).
// Exits 0 only if all that held and the page logged no console error, threw nothing and
// asked for nothing outside the admin listener. Waits are bounded; nothing is timed.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const WAIT_MS = 120000; // bound of every wait (a loaded machine renders slowly)

function parseArgs(argv) {
  const opts = { url: null, backends: 0, servers: 0, search: null, screenshot: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--backends') opts.backends = Number(argv[++i]);
    else if (a === '--servers') opts.servers = Number(argv[++i]);
    else if (a === '--search') opts.search = argv[++i];
    else if (a === '--screenshot') opts.screenshot = argv[++i];
    else if (!opts.url) opts.url = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!opts.url || !opts.backends || !opts.servers || !opts.search || !opts.screenshot) {
    throw new Error('usage: dashboard_scale.mjs <admin URL> --backends N --servers N --search NAME --screenshot FILE');
  }
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const base = new URL(opts.url);
  const problems = [];
  const log = (...a) => console.log('dashboard_scale.mjs:', ...a);

  const profile = mkdtempSync(join(tmpdir(), 'fulcrum-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 1440, height: 900 },
  });
  let closing = false;
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console error: ${m.text()} (${m.location().url})`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (req) => {
      const u = new URL(req.url());
      if (u.protocol !== 'data:' && u.origin !== base.origin) {
        problems.push(`request outside the admin listener: ${req.url()}`);
      }
    });
    // A status poll the page itself aborted (its 4 s answer timeout: a debug build on a
    // loaded machine can take that long for 10 000 servers) is counted and logged, not a
    // failure: the page retries, and a banner still up at the end fails the run below.
    let slowPolls = 0;
    page.on('requestfailed', (req) => {
      if (closing) return;
      const err = req.failure()?.errorText ?? '';
      if (err === 'net::ERR_ABORTED' && new URL(req.url()).pathname.endsWith('/api/v1/status')) {
        slowPolls++;
        log(`a status poll was aborted by the page's timeout (${slowPolls} so far)`);
        return;
      }
      problems.push(`request failed: ${req.url()} ${err}`);
    });

    await page.goto(base.href, { waitUntil: 'load', timeout: WAIT_MS });
    await page.waitForFunction(
      (n) => document.querySelectorAll('#backends section[data-backend]').length === n,
      opts.backends,
      { timeout: WAIT_MS, polling: 250 },
    );
    log(`all ${opts.backends} backends on the page`);

    // Collapsed: no server rows, every backend's table closed.
    const open = await page.evaluate(() => ({
      rows: document.querySelectorAll('tr.srv').length,
      openTables: [...document.querySelectorAll('#backends section[data-backend] .scroll')]
        .filter((w) => !w.hidden).length,
      header: document.getElementById('sum-up')?.textContent ?? '',
    }));
    if (open.rows !== 0) problems.push(`${open.rows} server rows shown before any search (backends should start closed)`);
    if (open.openTables !== 0) problems.push(`${open.openTables} backends open before any search`);
    if (!open.header.endsWith(`/ ${opts.servers}`)) {
      problems.push(`the header counts "${open.header}", not ${opts.servers} servers`);
    }
    // The header's figures agree with the API and with the frontend table: "in rotation"
    // is the API's usable servers over all servers, and the header's req/s is the
    // frontends' req/s summed (one frontend here: the same text), once it is known.
    const usable = await page.evaluate(async () => {
      const r = await fetch('api/v1/status?compact=true', { cache: 'no-store' });
      const st = await r.json();
      return st.backends.reduce((n, b) => n + b.servers.filter((s) => s.usable).length, 0);
    });
    if (open.header !== `${usable} / ${opts.servers}`) {
      problems.push(`the header says "${open.header}" in rotation; the API has ${usable} usable of ${opts.servers}`);
    }
    await page.waitForFunction(
      () => {
        const c = document.querySelector('#frontends tr[data-frontend] td:nth-child(6)');
        return c && c.textContent !== '–';
      },
      null,
      { timeout: WAIT_MS, polling: 250 },
    );
    const rates = await page.evaluate(() => ({
      header: document.getElementById('sum-rate').textContent,
      frontends: [...document.querySelectorAll('#frontends tr[data-frontend] td:nth-child(6)')]
        .map((c) => c.textContent),
    }));
    if (rates.frontends.length !== 1 || rates.frontends[0] !== rates.header) {
      problems.push(`header req/s "${rates.header}" but the frontends show ${JSON.stringify(rates.frontends)}`);
    }
    log(`header: ${usable} / ${opts.servers} in rotation as the API says; req/s ${rates.header} as the frontend row`);
    await page.locator('#search').waitFor({ state: 'visible', timeout: WAIT_MS });
    mkdirSync(dirname(opts.screenshot), { recursive: true });
    await page.screenshot({ path: opts.screenshot });
    log(`collapsed: no server row, search box shown (header ${open.header}); screenshot ${opts.screenshot}`);

    // Search one server: its row appears, and it is the only one.
    await page.locator('#search').fill(opts.search);
    const row = page.locator(`tr.srv[data-server="${opts.search}"]`);
    await row.first().waitFor({ state: 'visible', timeout: WAIT_MS });
    const found = await page.evaluate(() => ({
      rows: [...document.querySelectorAll('tr.srv')].map((r) => r.dataset.server),
      sections: [...document.querySelectorAll('#backends section[data-backend]')]
        .filter((s) => !s.hidden).map((s) => s.dataset.backend),
    }));
    if (found.rows.length !== 1 || found.rows[0] !== opts.search) {
      problems.push(`search "${opts.search}" shows rows ${JSON.stringify(found.rows)}`);
    }
    if (found.sections.length !== 1) {
      problems.push(`search "${opts.search}" leaves ${found.sections.length} backends shown`);
    }
    // One poll later the open backend's full figures are in (the detail fetch at scale).
    await page.waitForFunction(
      (n) => {
        const d = document.querySelector(`tr.srv[data-server="${n}"] .detail`);
        return d && d.textContent.includes('4xx');
      },
      opts.search,
      { timeout: WAIT_MS, polling: 250 },
    );
    const shot2 = opts.screenshot.replace(/\.png$/, '') + '-search.png';
    await page.screenshot({ path: shot2 });
    log(`search "${opts.search}": row shown in backend ${found.sections.join(',')}; screenshot ${shot2}`);

    if (await page.locator('#banner.show').count()) {
      problems.push(`connection-lost banner shown: ${await page.locator('#banner').textContent()}`);
    }
  } finally {
    closing = true;
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  }

  if (problems.length) {
    for (const p of problems) console.error('dashboard_scale.mjs: FAIL:', p);
    process.exit(1);
  }
  log('OK: no console errors');
}

main().catch((e) => {
  console.error('dashboard_scale.mjs: FAIL:', e && e.stack ? e.stack : e);
  process.exit(1);
});

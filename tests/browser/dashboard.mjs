// Drives fulcrum's dashboard in Debian's headless Chromium (run by tests/dashboard.rs).
//
//   node tests/browser/dashboard.mjs <admin URL> [--expect web1,web2] [--drain web1]
//        [--screenshot target/dashboard.png] [--checked]
//
// --discovery-error B: backend B's discovery source has failed; its header must say so.
// --checked: every expected server has active health checks, so each must show check dots.
// Every expected server's detail line (bytes, 4xx/5xx, errors, max, last change) must be
// shown in full, not cut off by its column.
// Loads the page, waits until every expected server is shown (by default: every server
// in /api/v1/status), clicks the Drain button of the --drain server and waits until the
// page shows it drained, takes a screenshot, and exits 0 only if the page logged no
// console errors, threw no errors and asked for nothing outside the admin listener.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function parseArgs(argv) {
  const opts = { url: null, expect: null, drain: null, screenshot: null, checked: false, discoveryError: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--expect') opts.expect = argv[++i].split(',').filter(Boolean);
    else if (a === '--drain') opts.drain = argv[++i];
    else if (a === '--screenshot') opts.screenshot = argv[++i];
    else if (a === '--checked') opts.checked = true;
    else if (a === '--discovery-error') opts.discoveryError = argv[++i];
    else if (!opts.url) opts.url = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!opts.url) throw new Error('usage: dashboard.mjs <admin URL> [--expect a,b] [--drain name] [--screenshot file]');
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const base = new URL(opts.url);
  const problems = [];
  const log = (...a) => console.log('dashboard.mjs:', ...a);

  if (!opts.expect) {
    const r = await fetch(new URL('/api/v1/status', base));
    const st = await r.json();
    opts.expect = st.backends.flatMap((b) => b.servers.map((s) => s.name));
  }
  if (opts.expect.length === 0) throw new Error('no servers to look for');

  const profile = mkdtempSync(join(tmpdir(), 'fulcrum-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 1440, height: 900 },
  });
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
    page.on('requestfailed', (req) => problems.push(`request failed: ${req.url()} ${req.failure()?.errorText}`));

    await page.goto(base.href, { waitUntil: 'load' });
    for (const name of opts.expect) {
      await page.locator(`tr.srv[data-server="${name}"] .name`).first().waitFor({ state: 'visible', timeout: 15000 });
    }
    log(`all ${opts.expect.length} servers shown: ${opts.expect.join(', ')}`);

    if (opts.drain) {
      const row = page.locator(`tr.srv[data-server="${opts.drain}"]`).first();
      await row.locator('button[data-action="drain"]').click({ timeout: 5000 });
      // The page re-reads the status after the PUT; the row turns amber (or stays red if down).
      await page.waitForFunction(
        (name) => {
          const tr = document.querySelector(`tr.srv[data-server="${name}"]`);
          return tr && tr.querySelector('button[data-action="drain"]').classList.contains('cur');
        },
        opts.drain,
        { timeout: 10000 },
      );
      const err = (await row.locator('.rowerr').textContent())?.trim();
      if (err) problems.push(`drain of ${opts.drain} showed an error: ${err}`);
      log(`clicked Drain on ${opts.drain}; the page shows it drained`);
    }

    // The operator's figures under each name are all on screen (not clipped by the
    // column), and a server with active checks shows check dots, not "no active checks".
    await page.waitForFunction(
      (names) => names.every((n) => {
        const d = document.querySelector(`tr.srv[data-server="${n}"] .detail`);
        return d && d.textContent.includes('4xx') && d.textContent.includes('changed');
      }),
      opts.expect,
      { timeout: 15000 },
    );
    const seen = await page.evaluate((names) => names.map((n) => {
      const tr = document.querySelector(`tr.srv[data-server="${n}"]`);
      const d = tr.querySelector('.detail');
      const cell = d.closest('td');
      return {
        name: n,
        clipped: d.scrollWidth > cell.clientWidth + 1 || cell.scrollWidth > cell.clientWidth + 1,
        dots: tr.querySelectorAll('.dot:not(.none)').length,
        text: d.textContent,
      };
    }), opts.expect);
    for (const s of seen) {
      if (s.clipped) problems.push(`${s.name}: the detail line is cut off by its column: ${s.text}`);
      if (opts.checked && s.dots === 0) problems.push(`${s.name}: no check dots although its backend has checks`);
    }
    log(`detail lines shown in full (${seen[0].text}); check dots: ${seen.map((s) => s.dots).join(',')}`);

    if (opts.discoveryError) {
      const e = page.locator(`section[data-backend="${opts.discoveryError}"] .discovery-error`);
      await e.waitFor({ state: 'visible', timeout: 15000 });
      log(`backend ${opts.discoveryError} shows its discovery error: ${(await e.textContent()).trim()}`);
    }

    if (opts.screenshot) {
      // A few more polls so the sparklines and check dots have something to draw.
      await page.waitForTimeout(2500);
      mkdirSync(dirname(opts.screenshot), { recursive: true });
      await page.screenshot({ path: opts.screenshot, fullPage: true });
      log(`screenshot: ${opts.screenshot}`);
    }
    if (await page.locator('#banner.show').count()) {
      problems.push(`connection-lost banner shown: ${await page.locator('#banner').textContent()}`);
    }
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  }

  if (problems.length) {
    for (const p of problems) console.error('dashboard.mjs: FAIL:', p);
    process.exit(1);
  }
  log('OK: no console errors');
}

main().catch((e) => {
  console.error('dashboard.mjs: FAIL:', e && e.stack ? e.stack : e);
  process.exit(1);
});

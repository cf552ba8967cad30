// Drives the operator web UI in headless Chromium (Debian's /usr/bin/chromium via playwright-core).
// Usage: node ui.mjs <phase>   with ADMIN_URL, ADMIN_KEY, SHOTS (a directory), and per phase:
//   signin-refused  CLIENT_KEY: a client key must not sign in
//   approve         APPROVAL_ID: approve that pending request
//   engage          engage the kill switch for server `fx`
//   release         release it
//   self-audit      open the self-audit report from the dashboard; screen and print renderings
//   budget          PRINCIPAL: read the limits table, then raise that principal's budget by 2
//   overview        read the upstream, tool and key tables; print READY, then wait (without
//                   reloading) until the framed pending list shows a request
// Prints one JSON line with what it saw; exits non-zero on any failed expectation.
import { chromium } from 'playwright-core';

const phase = process.argv[2];
const base = process.env.ADMIN_URL;
const shots = process.env.SHOTS;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const seen = { phase, violations: [] };
function expect(cond, what) {
  if (!cond) throw new Error(`expectation failed: ${what}`);
}
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') seen.violations.push(m.text());
  });
  const first = await page.goto(`${base}/ui/`);
  expect(page.url().endsWith('/ui/login'), `redirected to sign-in, got ${page.url()}`);
  seen.csp = first.headers()['content-security-policy'] || (await page.context().request.get(`${base}/ui/login`)).headers()['content-security-policy'];
  if (phase === 'signin-refused') {
    await page.fill('#key', process.env.CLIENT_KEY);
    await page.click('button[type=submit]');
    seen.error = await page.textContent('.flash.bad');
    expect(page.url().endsWith('/ui/login'), 'still on the sign-in page');
    await page.screenshot({ path: `${shots}/ui-signin-refused.png`, fullPage: true });
  } else {
    await page.fill('#key', process.env.ADMIN_KEY);
    await page.click('button[type=submit]');
    await page.waitForURL(`${base}/ui/`);
    expect(await page.isVisible('#approvals'), 'dashboard shows approvals');
    if (phase === 'approve') {
      const id = process.env.APPROVAL_ID;
      const card = page.locator(`article[id="${id}"]`);
      await card.waitFor();
      seen.preview = await card.locator('pre.preview').textContent();
      await page.screenshot({ path: `${shots}/ui-pending.png`, fullPage: true });
      await card.locator('form[action$="/approve"] input[name=reason]').fill('reviewed in the browser');
      await card.locator('form[action$="/approve"] button').click();
      await page.waitForURL(`${base}/ui/`);
      seen.flash = await page.textContent('#flash');
      seen.still_pending = await page.locator(`article[id="${id}"]`).count();
      await page.screenshot({ path: `${shots}/ui-approved.png`, fullPage: true });
    } else if (phase === 'engage') {
      await page.selectOption('#kill-engage select[name=scope]', 'server');
      await page.fill('#kill-engage input[name=target]', 'fx');
      await page.fill('#kill-engage input[name=reason]', 'browser drill');
      await page.click('#kill-engage button');
      await page.waitForURL(`${base}/ui/`);
      seen.flash = await page.textContent('#flash');
      seen.engaged_rows = await page.locator('#kill-engaged tr.engaged').count();
      await page.screenshot({ path: `${shots}/ui-killed.png`, fullPage: true });
    } else if (phase === 'release') {
      const row = page.locator('#kill-engaged tr.engaged').first();
      await row.locator('input[name=reason]').fill('drill over');
      await row.locator('button').click();
      await page.waitForURL(`${base}/ui/`);
      seen.flash = await page.textContent('#flash');
      seen.none = await page.isVisible('#kill-none');
      await page.screenshot({ path: `${shots}/ui-released.png`, fullPage: true });
    } else if (phase === 'self-audit') {
      await page.click('#self-audit-link');
      await page.waitForURL(`${base}/ui/self-audit`);
      await page.locator('#matrix').waitFor();
      seen.title = await page.title();
      seen.verdict = await page.textContent('#verdict');
      seen.matrix = await page.$$eval('#matrix tbody tr', (rows) =>
        rows.map((r) => {
          const status = r.querySelector('td:nth-child(3)');
          return {
            dimension: r.dataset.dimension,
            status: r.dataset.status,
            text: status.textContent.trim(),
            background: getComputedStyle(status).backgroundColor,
          };
        }));
      seen.evidence_rows = await page.locator('#evidence tbody tr').count();
      // Every evidence link in the page points at a row of the index.
      seen.dangling = await page.$$eval('a[href^="#E"]', (links) =>
        links.filter((a) => !document.getElementById(a.getAttribute('href').slice(1))).length);
      seen.external = await page.$$eval('[src], link[href]', (els) => els.length);
      // At A4 width nothing widens the page; on a phone-sized screen a status cell still keeps
      // its dot and word on one line (the table scrolls instead).
      await page.setViewportSize({ width: 800, height: 900 });
      seen.overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
      await page.setViewportSize({ width: 420, height: 900 });
      seen.wrapped_status = await page.$$eval('td.s-pass, td.s-partial, td.s-absent', (tds) =>
        tds.filter((td) => {
          const dot = td.querySelector('.dot').getBoundingClientRect();
          const words = [...td.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE);
          const rects = words.flatMap((n) => {
            const range = document.createRange();
            range.selectNodeContents(n);
            return [...range.getClientRects()].filter((r) => r.width > 0);
          });
          const lines = new Set(rects.map((r) => Math.round(r.top)));
          return lines.size !== 1 || rects.some((r) => r.top >= dot.bottom || r.left < dot.right);
        }).length);
      seen.roadmap_links = await page.$$eval('#matrix a[href^="#R"]', (links) =>
        links.filter((a) => !document.getElementById(a.getAttribute('href').slice(1))).length);
      await page.screenshot({ path: `${shots}/self-audit.png`, fullPage: true });
      await page.emulateMedia({ media: 'print' });
      await page.screenshot({ path: `${shots}/self-audit-print.png`, fullPage: true });
      await page.pdf({ path: `${shots}/self-audit.pdf`, format: 'A4', printBackground: true });
    } else if (phase === 'budget') {
      const rows = (sel) => page.$$eval(sel, (trs) => trs.map((tr) =>
        [...tr.querySelectorAll('td')].map((td) => td.textContent.trim())));
      seen.before = await rows('#limit-table tbody tr');
      await page.selectOption('#budget-adjust select[name=entry]', 'limits[0]');
      await page.fill('#budget-adjust input[name=principal]', process.env.PRINCIPAL);
      await page.fill('#budget-adjust input[name=raise]', '2');
      await page.fill('#budget-adjust input[name=reason]', 'raised in the browser');
      await page.click('#budget-adjust button');
      await page.waitForURL(`${base}/ui/`);
      seen.flash = await page.textContent('#flash');
      seen.after = await rows('#limit-table tbody tr');
      await page.screenshot({ path: `${shots}/ui-budget.png`, fullPage: true });
    } else if (phase === 'overview') {
      const rows = (sel) => page.$$eval(sel, (trs) => trs.map((tr) =>
        ({ cls: tr.className, cells: [...tr.querySelectorAll('td')].map((td) => td.textContent.trim()) })));
      seen.upstreams = await rows('#upstream-table tbody tr');
      seen.tools = await rows('#tool-table tbody tr');
      seen.keys = await rows('#key-table tbody tr');
      seen.repin = (await page.locator('#repin').count()) ? await page.textContent('#repin') : null;
      seen.self_audit_link = await page.isVisible('#self-audit-link');
      // No token in a table cell is broken across lines, and no cell breaks words anywhere.
      seen.broken_tokens = await page.$$eval('td code', (els) =>
        els.filter((e) => e.getClientRects().length > 1).map((e) => e.textContent));
      seen.cell_wrap = await page.$eval('td', (td) => getComputedStyle(td).overflowWrap);
      const live = page.frameLocator('#pending-live');
      seen.count_before = (await live.locator('#pending-count').textContent()).trim();
      await page.screenshot({ path: `${shots}/ui-overview.png`, fullPage: true });
      const url = page.url();
      console.log('READY');
      await live.locator('#pending-list li').first().waitFor({ timeout: 30000 });
      expect(page.url() === url, 'the page itself was not reloaded');
      seen.live_ids = await live.locator('#pending-list li').evaluateAll((lis) => lis.map((li) => li.dataset.id));
      seen.count_after = (await live.locator('#pending-count').textContent()).trim();
      await page.screenshot({ path: `${shots}/ui-live-pending.png`, fullPage: true });
    } else {
      throw new Error(`unknown phase ${phase}`);
    }
  }
  console.log(JSON.stringify(seen));
} catch (e) {
  console.log(JSON.stringify({ ...seen, failure: String(e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}

// Drive a candlewax chart page in headless Chromium (Debian's /usr/bin/chromium, through
// playwright-core: no browser is ever downloaded) and print what it shows as JSON lines.
//
//   node tests/e2e/chart_check.mjs [options] URL
//
//   --screenshot PATH   write a PNG of the page there
//   --timeout S         seconds to wait for each step (default 60)
//   --size WxH          the window (default 1200x900)
//   --chromium PATH     the browser (default $CHROMIUM or /usr/bin/chromium)
//   live page only:
//   --wait LIST         what to wait for after "ready": update, alert, both (default update,alert)
//                       or none; "update": the last candle changed or a candle was appended,
//                       "alert": a marker was added
//   --switch-to KEY     afterwards pick KEY (venue:SYMBOL) in the symbol picker and wait for
//                       its candles
//
// The page (the backtest report, file://, or the gateway's live page) exposes
// window.candlewaxChart (sinks/gateway/static/chart.js); its state().mode says which it is.
//
// Report: every symbol of the picker, and every interval of each, is chosen through the real
// <select>s; one line {"event":"done", "mode":"report", "series":[...], ...}.
// Live: {"event":"ready", ...} as soon as the history is drawn and the socket is live (the
// caller pushes its update and alert then), and {"event":"done", ...} when what --wait names
// happened or the timeout passed.
// Every line has "ok" and "problems" (what failed, in words); exit status 0 when ok, 1 when a
// check failed, 2 when the page could not be driven at all.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--hide-scrollbars',
];

function parse(argv) {
  const opts = {
    url: null,
    screenshot: null,
    timeout: 60,
    width: 1200,
    height: 900,
    chromium: process.env.CHROMIUM || '/usr/bin/chromium',
    wait: ['update', 'alert'],
    switchTo: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--screenshot') opts.screenshot = next();
    else if (a === '--timeout') opts.timeout = Number(next());
    else if (a === '--size') [opts.width, opts.height] = next().split('x').map(Number);
    else if (a === '--chromium') opts.chromium = next();
    else if (a === '--wait') {
      const v = next();
      opts.wait = v === 'none' ? [] : v === 'both' ? ['update', 'alert'] : v.split(',');
    } else if (a === '--switch-to') opts.switchTo = next();
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
    else opts.url = a;
  }
  if (!opts.url) throw new Error('usage: chart_check.mjs [options] URL');
  return opts;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// A candle's identity for "did it change": its start and exact numbers.
const sig = (c) => (c ? [c.time, c.open, c.high, c.low, c.close, c.volume].join('|') : '');

async function snapshot(page) {
  return page.evaluate(() => {
    const h = window.candlewaxChart;
    const candles = h.candles();
    const markers = h.markers();
    return {
      state: h.state(),
      candles: candles.length,
      incomplete: candles.filter((c) => !c.complete).length,
      // drawn = the chart holds the same bars as the exact store, each a real OHLC
      drawn: candles.every(
        (c) =>
          c.drawn.every(Number.isFinite) &&
          c.drawn[1] >= Math.max(c.drawn[0], c.drawn[3]) &&
          c.drawn[2] <= Math.min(c.drawn[0], c.drawn[3])
      ),
      first: candles[0] || null,
      last: candles[candles.length - 1] || null,
      markers: markers.length,
      marker_ids: markers.map((m) => m.id),
      marker_times: markers.map((m) => m.time),
      markers_on_candles: markers.every((m) => m.time != null),
    };
  });
}

async function waitFor(page, fn, arg, timeoutS) {
  try {
    await page.waitForFunction(fn, arg, { timeout: timeoutS * 1000, polling: 100 });
    return true;
  } catch (err) {
    return false;
  }
}

async function checkReport(page, opts, out) {
  const symbols = await page.$$eval('#cw-symbol option', (os) => os.map((o) => o.value));
  out.symbols = symbols;
  out.series = [];
  let previous = null;
  out.symbol_switches = [];
  for (const key of symbols) {
    await page.selectOption('#cw-symbol', key);
    const intervals = await page.$$eval('#cw-interval option', (os) => os.map((o) => o.value));
    let firstOfSymbol = null;
    for (const interval of intervals) {
      await page.selectOption('#cw-interval', interval);
      const snap = await snapshot(page);
      if (snap.state.symbol !== key || snap.state.interval !== interval) {
        out.problems.push(`picked ${key} ${interval}, the page shows ${snap.state.symbol} ${snap.state.interval}`);
      }
      if (!snap.candles) out.problems.push(`${key} ${interval}: no candles`);
      if (!snap.drawn) out.problems.push(`${key} ${interval}: candles not drawn as their bars`);
      if (!snap.markers_on_candles) out.problems.push(`${key} ${interval}: a marker off the candles`);
      out.series.push({
        symbol: key,
        interval,
        candles: snap.candles,
        incomplete: snap.incomplete,
        markers: snap.markers,
        marker_ids: snap.marker_ids,
        marker_times: snap.marker_times,
        first: snap.first,
        last: snap.last,
      });
      if (!firstOfSymbol) firstOfSymbol = snap;
    }
    if (previous && firstOfSymbol) {
      const changed = sig(previous.first) !== sig(firstOfSymbol.first) || sig(previous.last) !== sig(firstOfSymbol.last);
      out.symbol_switches.push({ to: key, changed });
      if (!changed) out.problems.push(`switching to ${key} left the same candles`);
    }
    previous = firstOfSymbol;
  }
  // Back to the page's own first choice for the picture.
  await page.goto('about:blank');
  await page.goto(opts.url, { waitUntil: 'load', timeout: opts.timeout * 1000 });
  await waitFor(page, () => window.candlewaxChart && window.candlewaxChart.candles().length > 0, null, opts.timeout);
  out.shown = (await snapshot(page)).state;
}

async function checkLive(page, opts, out) {
  const before = await snapshot(page);
  const ready = {
    event: 'ready',
    state: before.state,
    candles: before.candles,
    last: before.last,
    markers: before.markers,
    marker_ids: before.marker_ids,
  };
  emit({ ...ready, ok: true, problems: [] });
  out.before = ready;
  const lastSig = sig(before.last);
  const waits = {
    update: () =>
      waitFor(
        page,
        ([n, s]) => {
          const c = window.candlewaxChart.candles();
          const last = c[c.length - 1];
          const now = last ? [last.time, last.open, last.high, last.low, last.close, last.volume].join('|') : '';
          return c.length !== n || now !== s;
        },
        [before.candles, lastSig],
        opts.timeout
      ),
    alert: () =>
      waitFor(page, (n) => window.candlewaxChart.markers().length > n, before.markers, opts.timeout),
  };
  out.waited = {};
  for (const what of opts.wait) {
    if (!waits[what]) throw new Error(`--wait: unknown ${what}`);
    out.waited[what] = await waits[what]();
    if (!out.waited[what]) out.problems.push(`no ${what} within ${opts.timeout} s`);
  }
  const after = await snapshot(page);
  out.after = {
    state: after.state,
    candles: after.candles,
    last: after.last,
    markers: after.markers,
    marker_ids: after.marker_ids,
    marker_times: after.marker_times,
  };
  out.last_changed = sig(after.last) !== lastSig || after.candles !== before.candles;
  if (!after.drawn) out.problems.push('candles not drawn as their bars');
  if (!after.markers_on_candles) out.problems.push('a marker off the candles');
  if (opts.switchTo) {
    await page.selectOption('#cw-symbol', opts.switchTo);
    const switched = await waitFor(
      page,
      (key) => {
        const s = window.candlewaxChart.state();
        return s.symbol === key && !s.loading && window.candlewaxChart.candles().length > 0;
      },
      opts.switchTo,
      opts.timeout
    );
    const snap = await snapshot(page);
    out.switched = {
      to: opts.switchTo,
      state: snap.state,
      candles: snap.candles,
      first: snap.first,
      last: snap.last,
      markers: snap.markers,
      changed: sig(snap.last) !== sig(after.last) || sig(snap.first) !== sig(after.first),
    };
    if (!switched) out.problems.push(`switching to ${opts.switchTo}: no candles within ${opts.timeout} s`);
    else if (!out.switched.changed) out.problems.push(`switching to ${opts.switchTo} left the same candles`);
  }
}

async function main() {
  const opts = parse(process.argv.slice(2));
  const profile = mkdtempSync(join(tmpdir(), 'candlewax-chromium-'));
  const out = { event: 'done', url: opts.url, mode: null, ok: false, problems: [], errors: [], console: [], http_errors: [], external_requests: [] };
  let browser;
  try {
    // A fresh profile each run (launchPersistentContext owns --user-data-dir).
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: opts.chromium,
      headless: true,
      args: FLAGS,
      viewport: { width: opts.width, height: opts.height },
    });
    browser = context;
    const page = context.pages()[0] || (await context.newPage());
    page.on('pageerror', (err) => out.errors.push(String(err && err.stack ? err.stack : err)));
    page.on('console', (msg) => {
      if (msg.type() === 'error') out.console.push(msg.text());
    });
    page.on('response', (res) => {
      if (res.status() >= 400) out.http_errors.push(`${res.status()} ${res.url()}`);
    });
    const origin = opts.url.startsWith('file:') ? null : new URL(opts.url).origin;
    page.on('request', (req) => {
      const u = req.url();
      if (/^(data|blob|about):/.test(u)) return;
      if (origin ? !u.startsWith(origin) && !u.startsWith(origin.replace(/^http/, 'ws')) : !u.startsWith('file:')) {
        out.external_requests.push(u);
      }
    });
    await page.goto(opts.url, { waitUntil: 'load', timeout: opts.timeout * 1000 });
    const loaded = await waitFor(
      page,
      () => {
        const h = window.candlewaxChart;
        if (!h) return false;
        const s = h.state();
        return !s.loading && h.candles().length > 0 && (s.mode !== 'live' || s.connected);
      },
      null,
      opts.timeout
    );
    const hasHook = await page.evaluate(() => !!window.candlewaxChart);
    if (!loaded) {
      const state = hasHook ? await page.evaluate(() => window.candlewaxChart.state()) : null;
      out.state = state;
      out.problems.push(hasHook ? `no candles drawn within ${opts.timeout} s` : 'no window.candlewaxChart (chart.js did not run)');
    } else {
      out.mode = await page.evaluate(() => window.candlewaxChart.state().mode);
      if (out.mode === 'report') await checkReport(page, opts, out);
      else await checkLive(page, opts, out);
      out.pixels = await page.evaluate(() => window.candlewaxChart.pixels());
      if (out.pixels.colors < 10) out.problems.push('the chart is blank');
    }
    if (opts.screenshot) {
      await page.screenshot({ path: opts.screenshot, fullPage: false });
      out.screenshot = opts.screenshot;
    }
    out.attribution = await page.evaluate(() => ({
      logo: !!document.querySelector('a[href*="tradingview.com"] svg, #tv-attr-logo, a[id*="tv-attr"]'),
      link: !!document.querySelector('footer a[href^="https://www.tradingview.com/"]'),
    }));
    if (!out.attribution.link) out.problems.push('no link to TradingView (the library\'s attribution)');
    if (out.errors.length) out.problems.push(`${out.errors.length} page error(s)`);
    if (out.mode === 'report' && out.external_requests.length) {
      out.problems.push(`the report fetched ${out.external_requests.length} thing(s) from outside the file`);
    }
    out.ok = out.problems.length === 0;
    emit(out);
    return out.ok ? 0 : 1;
  } finally {
    if (browser) await browser.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    emit({ event: 'error', ok: false, problems: [String(err && err.stack ? err.stack : err)] });
    process.exit(2);
  }
);

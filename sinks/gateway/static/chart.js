/*
 * candlewax charts: one candlestick chart with a symbol and an interval picker, alert markers,
 * zoom and pan (the chart library's own: wheel, drag, pinch).
 *
 * Two pages use this file: the backtest report (sinks/report.py inlines it, the bars and alerts
 * are JSON in the page: <body data-candlewax="report">) and the live page (static/index.html:
 * history from the gateway's REST API, live bars and alerts over its WebSocket,
 * <body data-candlewax="live">). Prices arrive as exact decimal strings; the chart draws them
 * as floats, and everything printed (the legend, the alert list) is the exact strings.
 *
 * Drawing: TradingView Lightweight Charts™ (window.LightweightCharts, the standalone build,
 * Apache License 2.0). Its NOTICE: "TradingView Lightweight Charts
 * Copyright (c) 2023 TradingView, Inc. https://www.tradingview.com/". The chart shows the
 * library's TradingView attribution logo (its default), and both pages link to TradingView.
 *
 * Tests read the chart through window.candlewaxChart: candles(), markers(), state(), pixels(),
 * select(key, interval) (tests/e2e/chart_check.mjs).
 */
(function () {
  'use strict';

  var LWC = window.LightweightCharts;
  var UP = '#2e7d32';
  var DOWN = '#c62828';
  var UP_PALE = 'rgba(46,125,50,0.25)';
  var DOWN_PALE = 'rgba(198,40,40,0.25)';
  var SEVERITY = { critical: '#c62828', warning: '#ef6c00' };
  var SHOWN = 150; // candles in view after a load (zoom out or pan for the rest)
  var MAX_ALERT_LIST = 50;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  }

  function utc(ms) {
    var s = new Date(ms).toISOString();
    return ms % 60000 ? s.slice(0, 19).replace('T', ' ') : s.slice(0, 16).replace('T', ' ');
  }

  /** Decimal places that matter in an exact decimal string ("61837.63000000" → 2). */
  function places(text) {
    var dot = String(text).indexOf('.');
    if (dot < 0) return 0;
    var frac = String(text).slice(dot + 1).replace(/0+$/, '');
    return frac.length;
  }

  function errorText(err) {
    return err && err.message ? err.message : String(err);
  }

  // ---------------------------------------------------------------------------------------------
  // The chart: candles (exact bars), volume, alert markers, a legend.

  function CandleView(container) {
    this.container = container;
    this.legend = el('div', 'cw-legend');
    container.appendChild(this.legend);
    this.chart = LWC.createChart(container, {
      autoSize: true,
      layout: { background: { color: '#ffffff' }, textColor: '#333', attributionLogo: true },
      grid: { vertLines: { color: '#f2f2f2' }, horzLines: { color: '#f2f2f2' } },
      rightPriceScale: { borderColor: '#ccc' },
      timeScale: { borderColor: '#ccc', timeVisible: true, secondsVisible: false },
      crosshair: { mode: LWC.CrosshairMode.Normal },
    });
    this.series = this.chart.addSeries(LWC.CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      borderUpColor: UP,
      borderDownColor: DOWN,
      wickUpColor: UP,
      wickDownColor: DOWN,
    });
    this.volume = this.chart.addSeries(LWC.HistogramSeries, {
      priceScaleId: 'volume',
      priceFormat: { type: 'volume' },
      lastValueVisible: false,
      priceLineVisible: false,
    });
    this.chart.priceScale('volume').applyOptions({ scaleMargins: { top: 0.82, bottom: 0 } });
    this.markerApi = LWC.createSeriesMarkers(this.series, []);
    this.title = '';
    this.precision = -1;
    this.clear();
    var self = this;
    this.chart.subscribeCrosshairMove(function (param) {
      self.showLegend(param && param.time != null ? self.byTime.get(param.time) : undefined);
    });
  }

  CandleView.prototype.clear = function () {
    this.bars = []; // exact bars: {t, o, h, l, c, v, n, complete}
    this.times = []; // the chart's time (s) of each bar
    this.byStart = new Map(); // bar start ms → index
    this.byTime = new Map(); // chart time → index
    this.alerts = new Map(); // id → alert (with .t, its bar's start ms)
    this.series.setData([]);
    this.volume.setData([]);
    this.markerApi.setMarkers([]);
    this.showLegend();
  };

  // Times must strictly increase: bars by activity (tick:…, volume:…) can start in one second.
  CandleView.prototype.timeFor = function (startMs) {
    var s = Math.floor(startMs / 1000);
    var prev = this.times.length ? this.times[this.times.length - 1] : null;
    return prev != null && s <= prev ? prev + 1 : s;
  };

  CandleView.prototype.points = function (bar, time) {
    var open = Number(bar.o);
    var close = Number(bar.c);
    var up = close >= open;
    var candle = { time: time, open: open, high: Number(bar.h), low: Number(bar.l), close: close };
    if (bar.complete === false) {
      // Partial or over a gap: pale, outlined.
      candle.color = up ? UP_PALE : DOWN_PALE;
      candle.borderColor = up ? UP : DOWN;
    }
    var volume = {
      time: time,
      value: Number(bar.v || 0),
      color: up ? 'rgba(46,125,50,0.3)' : 'rgba(198,40,40,0.3)',
    };
    return [candle, volume];
  };

  CandleView.prototype.fitPrecision = function (bars) {
    var p = this.precision < 0 ? 0 : this.precision;
    for (var i = 0; i < bars.length; i++) {
      var b = bars[i];
      p = Math.max(p, places(b.o), places(b.h), places(b.l), places(b.c));
    }
    p = Math.min(p, 10);
    if (p !== this.precision) {
      this.precision = p;
      this.series.applyOptions({
        priceFormat: { type: 'price', precision: p, minMove: Math.pow(10, -p) },
      });
    }
  };

  CandleView.prototype.setBars = function (bars, title) {
    this.clear();
    this.title = title || '';
    this.precision = -1;
    this.fitPrecision(bars);
    var candles = [];
    var volumes = [];
    for (var i = 0; i < bars.length; i++) {
      var time = this.timeFor(bars[i].t);
      this.times.push(time);
      this.bars.push(bars[i]);
      this.byStart.set(bars[i].t, i);
      this.byTime.set(time, i);
      var pts = this.points(bars[i], time);
      candles.push(pts[0]);
      volumes.push(pts[1]);
    }
    this.series.setData(candles);
    this.volume.setData(volumes);
    var n = bars.length;
    if (n > SHOWN) this.chart.timeScale().setVisibleLogicalRange({ from: n - SHOWN, to: n + 3 });
    else this.chart.timeScale().fitContent();
    this.showLegend();
  };

  /** A live bar: the last one updated, a new one appended, an older one replaced in place. */
  CandleView.prototype.upsert = function (bar) {
    var n = this.bars.length;
    var last = n ? this.bars[n - 1] : null;
    var at = this.byStart.get(bar.t);
    var how;
    if (!last || bar.t > last.t) {
      var time = this.timeFor(bar.t);
      this.times.push(time);
      this.bars.push(bar);
      this.byStart.set(bar.t, n);
      this.byTime.set(time, n);
      at = n;
      how = 'append';
    } else if (at != null) {
      this.bars[at] = bar;
      how = at === n - 1 ? 'update' : 'historical';
    } else {
      return 'ignored'; // older than the history and not in it
    }
    this.fitPrecision([bar]);
    var pts = this.points(bar, this.times[at]);
    this.series.update(pts[0], how === 'historical');
    this.volume.update(pts[1], how === 'historical');
    if (how === 'append') this.renderMarkers();
    this.showLegend();
    return how;
  };

  CandleView.prototype.setAlerts = function (alerts) {
    this.alerts = new Map();
    for (var i = 0; i < alerts.length; i++) this.alerts.set(alerts[i].id, alerts[i]);
    this.renderMarkers();
  };

  CandleView.prototype.addAlert = function (alert) {
    if (this.alerts.has(alert.id)) return false;
    this.alerts.set(alert.id, alert);
    this.renderMarkers();
    this.showLegend();
    return true;
  };

  /** One marker per alert whose bar is on the chart, above it, coloured by severity. */
  CandleView.prototype.renderMarkers = function () {
    var marks = [];
    var self = this;
    this.alerts.forEach(function (a) {
      var i = self.byStart.get(a.t);
      if (i == null) return;
      marks.push({
        time: self.times[i],
        position: 'aboveBar',
        shape: 'arrowDown',
        color: SEVERITY[a.severity] || SEVERITY.warning,
        id: String(a.id),
        size: 1,
      });
    });
    marks.sort(function (x, y) {
      return x.time - y.time;
    });
    this.markerApi.setMarkers(marks);
  };

  CandleView.prototype.alertsAt = function (start) {
    var out = [];
    this.alerts.forEach(function (a) {
      if (a.t === start) out.push(a);
    });
    return out;
  };

  CandleView.prototype.showLegend = function (index) {
    var legend = this.legend;
    legend.textContent = '';
    if (index == null) index = this.bars.length - 1;
    var b = this.bars[index];
    legend.appendChild(el('b', null, this.title));
    if (!b) {
      if (this.title) legend.appendChild(document.createTextNode(' — no bars'));
      return;
    }
    var text =
      ' ' + utc(b.t) + ' UTC  O ' + b.o + '  H ' + b.h + '  L ' + b.l + '  C ' + b.c +
      (b.v != null ? '  V ' + b.v : '') +
      (b.n != null ? '  ' + b.n + ' trades' : '') +
      (b.complete === false ? '  (incomplete: partial or over a gap)' : '');
    legend.appendChild(document.createTextNode(text));
    var alerts = this.alertsAt(b.t);
    for (var i = 0; i < alerts.length; i++) {
      var a = alerts[i];
      legend.appendChild(el('br'));
      legend.appendChild(
        el('span', 'alerts sev-' + a.severity, '▼ ' + (a.text || a.rule + ' ' + a.value + ' ≥ ' + a.threshold))
      );
    }
  };

  /** Scroll so the bar starting at ``start`` (ms) is in the middle of the view. */
  CandleView.prototype.focus = function (start) {
    var i = this.byStart.get(start);
    if (i == null) return;
    var half = Math.min(SHOWN, this.bars.length) / 2;
    this.chart.timeScale().setVisibleLogicalRange({ from: i - half, to: i + half });
    this.showLegend(i);
  };

  // What the tests read.
  CandleView.prototype.candles = function () {
    var drawn = this.series.data();
    var bars = this.bars;
    return drawn.map(function (d, i) {
      var b = bars[i] || {};
      return {
        time: b.t,
        open: b.o,
        high: b.h,
        low: b.l,
        close: b.c,
        volume: b.v,
        complete: b.complete !== false,
        drawn: [d.open, d.high, d.low, d.close],
      };
    });
  };

  CandleView.prototype.markers = function () {
    var self = this;
    return this.markerApi.markers().map(function (m) {
      var a = self.alerts.get(m.id) || {};
      var i = self.byTime.get(m.time);
      return {
        time: i == null ? null : self.bars[i].t,
        id: m.id,
        rule: a.rule,
        interval: a.interval,
        severity: a.severity,
        color: m.color,
      };
    });
  };

  /** The chart as drawn (its own screenshot): distinct colours and candle-coloured pixels. */
  CandleView.prototype.pixels = function () {
    var canvas = this.chart.takeScreenshot();
    var ctx = canvas.getContext('2d');
    var data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    var colors = new Set();
    var up = 0;
    var down = 0;
    for (var i = 0; i < data.length; i += 4) {
      var r = data[i];
      var g = data[i + 1];
      var b = data[i + 2];
      colors.add((r << 16) | (g << 8) | b);
      if (Math.abs(r - 46) < 12 && Math.abs(g - 125) < 12 && Math.abs(b - 50) < 12) up++;
      if (Math.abs(r - 198) < 12 && Math.abs(g - 40) < 12 && Math.abs(b - 40) < 12) down++;
    }
    return { width: canvas.width, height: canvas.height, colors: colors.size, up: up, down: down };
  };

  // ---------------------------------------------------------------------------------------------
  // Shared page pieces: pickers, the URL's choice, paged tables.

  function fill(select, values, labels, chosen) {
    select.textContent = '';
    for (var i = 0; i < values.length; i++) {
      var option = el('option', null, labels ? labels[i] : values[i]);
      option.value = values[i];
      select.appendChild(option);
    }
    if (chosen != null && values.indexOf(chosen) >= 0) select.value = chosen;
  }

  /** ?symbol=…&interval=… or #symbol=…&interval=… (the hash wins; the page writes the hash). */
  function chosen() {
    var query = new URLSearchParams(location.search);
    var hash = new URLSearchParams(location.hash.replace(/^#/, ''));
    return {
      symbol: hash.get('symbol') || query.get('symbol'),
      interval: hash.get('interval') || query.get('interval'),
    };
  }

  function remember(key, interval) {
    var hash = '#symbol=' + encodeURIComponent(key) + '&interval=' + encodeURIComponent(interval);
    if (location.hash === hash) return;
    try {
      history.replaceState(null, '', hash);
    } catch (err) {
      location.hash = hash; // where replaceState is refused (some file:// pages)
    }
  }

  /** Tables with class "paged": pages of data-page-size rows (the rows stay in the page). */
  function pageTables(root) {
    var tables = root.querySelectorAll('table.paged');
    Array.prototype.forEach.call(tables, function (table) {
      var size = Number(table.getAttribute('data-page-size')) || 50;
      var rows = Array.prototype.slice.call(table.tBodies[0].rows);
      if (rows.length <= size) return;
      var pages = Math.ceil(rows.length / size);
      var bar = el('div', 'cw-pager');
      var first = el('button', null, '«');
      var prev = el('button', null, '‹');
      var label = el('span');
      var next = el('button', null, '›');
      var last = el('button', null, '»');
      [first, prev, label, next, last].forEach(function (n) {
        bar.appendChild(n);
      });
      var page = 0;
      function show(p) {
        page = Math.max(0, Math.min(pages - 1, p));
        rows.forEach(function (row, i) {
          row.hidden = Math.floor(i / size) !== page;
        });
        label.textContent =
          page * size + 1 + '–' + Math.min(rows.length, (page + 1) * size) + ' of ' + rows.length;
        first.disabled = prev.disabled = page === 0;
        next.disabled = last.disabled = page === pages - 1;
      }
      first.onclick = function () { show(0); };
      prev.onclick = function () { show(page - 1); };
      next.onclick = function () { show(page + 1); };
      last.onclick = function () { show(pages - 1); };
      table.parentNode.insertBefore(bar, table);
      show(0);
    });
  }

  function hook(view, extra) {
    var api = {
      candles: function () { return view.candles(); },
      markers: function () { return view.markers(); },
      pixels: function () { return view.pixels(); },
    };
    for (var k in extra) api[k] = extra[k];
    window.candlewaxChart = api;
    return api;
  }

  // ---------------------------------------------------------------------------------------------
  // The backtest report: everything in the page.

  function columns(entry) {
    var out = [];
    for (var i = 0; i < entry.t.length; i++) {
      out.push({
        t: entry.t[i],
        o: entry.o[i],
        h: entry.h[i],
        l: entry.l[i],
        c: entry.c[i],
        v: entry.v[i],
        n: entry.n[i],
        complete: !entry.x[i],
      });
    }
    return out;
  }

  function report(data) {
    var root = document.getElementById('cw-report');
    if (!root.querySelector('.cw-chart')) {
      pageTables(root); // no bars: tables only
      return;
    }
    var symbolSelect = document.getElementById('cw-symbol');
    var intervalSelect = document.getElementById('cw-interval');
    var note = document.getElementById('cw-note');
    var view = new CandleView(root.querySelector('.cw-chart'));
    var series = data.series;
    var byKey = {};
    series.forEach(function (s) {
      byKey[s.key] = s;
    });
    var current = { key: null, interval: null };
    fill(
      symbolSelect,
      series.map(function (s) { return s.key; }),
      series.map(function (s) { return s.key + ' (' + s.alerts + ' alerts)'; })
    );

    function show(key, interval) {
      var s = byKey[key] || byKey[data.default.key] || series[0];
      if (!s) return false;
      var names = s.intervals.map(function (e) { return e.interval; });
      var entry = s.intervals[Math.max(0, names.indexOf(interval))];
      if (s.key !== current.key) fill(intervalSelect, names, null, entry.interval);
      symbolSelect.value = s.key;
      intervalSelect.value = entry.interval;
      current = { key: s.key, interval: entry.interval };
      view.setBars(columns(entry), s.key + ' ' + entry.interval);
      view.setAlerts(entry.alerts);
      var shown = entry.t.length;
      note.textContent =
        entry.total + ' bars' +
        (shown < entry.total ? ' (the last ' + shown + ' drawn)' : '') +
        ', ' + entry.alerts.length + ' alerts' +
        (entry.incomplete ? ', ' + entry.incomplete + ' incomplete (pale)' : '') +
        ' — wheel or pinch to zoom, drag to pan, hover for the exact numbers';
      remember(s.key, entry.interval);
      return true;
    }

    symbolSelect.addEventListener('change', function () {
      show(symbolSelect.value, current.interval);
    });
    intervalSelect.addEventListener('change', function () {
      show(current.key, intervalSelect.value);
    });
    // An alert row shows its bar on the chart.
    Array.prototype.forEach.call(root.querySelectorAll('tr.alert-row'), function (row) {
      row.addEventListener('click', function () {
        show(row.getAttribute('data-key'), row.getAttribute('data-interval'));
        view.focus(Number(row.getAttribute('data-t')));
        root.querySelector('.cw-chart').scrollIntoView({ block: 'center' });
      });
    });
    window.addEventListener('hashchange', function () {
      var want = chosen();
      if (want.symbol !== current.key || want.interval !== current.interval) {
        show(want.symbol, want.interval);
      }
    });
    pageTables(root);
    var want = chosen();
    show(want.symbol || data.default.key, want.interval || data.default.interval);
    hook(view, {
      mode: 'report',
      state: function () {
        return {
          mode: 'report',
          symbol: current.key,
          interval: current.interval,
          symbols: series.map(function (s) { return s.key; }),
          intervals: (byKey[current.key] || { intervals: [] }).intervals.map(function (e) {
            return e.interval;
          }),
          loading: false,
        };
      },
      select: function (key, interval) {
        return Promise.resolve(show(key, interval));
      },
    });
  }

  // ---------------------------------------------------------------------------------------------
  // The live page: the gateway's REST API for history, its WebSocket for what happens now.

  function getJSON(url) {
    return fetch(url, { headers: { Accept: 'application/json' } }).then(function (r) {
      if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
      return r.json();
    });
  }

  function streamNames(key, interval) {
    var name = key.toLowerCase();
    return [name + '@kline_' + interval, name + '@alert'];
  }

  /** One WebSocket to /stream, re-opened with backoff; subscriptions changed on it live. */
  function Stream(onMessage, onStatus, onReopen) {
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.onReopen = onReopen;
    this.streams = [];
    this.ws = null;
    this.delay = 500;
    this.opens = 0;
    this.nextId = 1;
    this.timer = null;
  }

  Stream.prototype.url = function () {
    var url = new URL('stream?streams=' + this.streams.join('/'), location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.hash = '';
    return url.toString();
  };

  Stream.prototype.send = function (method, params) {
    if (!params.length || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify({ method: method, params: params, id: this.nextId++ }));
  };

  Stream.prototype.set = function (streams) {
    var old = this.streams;
    this.streams = streams.slice();
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.send('UNSUBSCRIBE', old.filter(function (s) { return streams.indexOf(s) < 0; }));
      this.send('SUBSCRIBE', streams.filter(function (s) { return old.indexOf(s) < 0; }));
    } else if (!this.ws && !this.timer) {
      this.connect();
    }
    // (connecting: the socket opened with the old names re-subscribes on open)
  };

  Stream.prototype.connect = function () {
    var self = this;
    this.timer = null;
    var asked = this.streams.slice();
    var ws;
    try {
      ws = new WebSocket(this.url());
    } catch (err) {
      this.retry(String(err));
      return;
    }
    this.ws = ws;
    var openedAt = 0;
    this.onStatus('connecting', '');
    ws.onopen = function () {
      openedAt = Date.now();
      self.opens++;
      // The choice may have changed while connecting.
      var now = self.streams;
      self.send('UNSUBSCRIBE', asked.filter(function (s) { return now.indexOf(s) < 0; }));
      self.send('SUBSCRIBE', now.filter(function (s) { return asked.indexOf(s) < 0; }));
      self.onStatus('live', '');
      if (self.opens > 1) self.onReopen(); // what was missed comes from REST again
    };
    ws.onmessage = function (event) {
      var msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      self.onMessage(msg);
    };
    ws.onclose = function () {
      if (self.ws !== ws) return;
      self.ws = null;
      // A connection that lived a while starts the backoff again.
      if (openedAt && Date.now() - openedAt > 10000) self.delay = 500;
      self.retry('disconnected');
    };
  };

  Stream.prototype.retry = function (why) {
    var wait = this.delay * (0.8 + 0.4 * Math.random());
    this.delay = Math.min(this.delay * 2, 30000);
    this.onStatus('down', why + '; reconnecting in ' + (wait / 1000).toFixed(1) + ' s');
    var self = this;
    this.timer = setTimeout(function () {
      self.connect();
    }, wait);
  };

  function klineBar(k) {
    // REST: [openTime, o, h, l, c, v, closeTime, quoteVolume, trades, ...]
    return { t: k[0], o: k[1], h: k[2], l: k[3], c: k[4], v: k[5], n: k[8] };
  }

  function alertItem(a) {
    var out = {};
    for (var k in a) out[k] = a[k];
    out.t = a.window_start_ms != null ? a.window_start_ms : a.t;
    return out;
  }

  function live() {
    var root = document.getElementById('cw-live');
    var symbolSelect = document.getElementById('cw-symbol');
    var intervalSelect = document.getElementById('cw-interval');
    var status = document.getElementById('cw-status');
    var list = document.getElementById('cw-alerts');
    var view = new CandleView(root.querySelector('.cw-chart'));
    var state = {
      mode: 'live',
      symbol: null,
      interval: null,
      symbols: [],
      intervals: [],
      loading: true,
      connected: false,
      status: 'starting',
      error: null,
      klines: 0, // live kline messages applied
      alerts: 0, // live alert messages applied
      lastMessageMs: null,
    };
    var generation = 0;
    var pending = [];
    var listed = new Map();

    function setStatus(kind, text) {
      state.connected = kind === 'live';
      state.status = kind + (text ? ': ' + text : '');
      status.className = 'cw-status ' + kind;
      status.textContent = kind === 'live' ? 'live' : kind + (text ? ' — ' + text : '');
    }

    function listAlert(a) {
      if (listed.has(a.id)) return;
      var item = el('li', 'sev-' + a.severity);
      item.textContent = utc(a.ts_ms) + ' UTC  ' + a.interval + '  ' + (a.text || a.rule);
      listed.set(a.id, item);
      list.insertBefore(item, list.firstChild);
      while (list.children.length > MAX_ALERT_LIST) {
        var gone = list.lastChild;
        list.removeChild(gone);
        listed.forEach(function (node, id) {
          if (node === gone) listed.delete(id);
        });
      }
    }

    function apply(msg) {
      var data = msg.data || {};
      var names = streamNames(state.symbol, state.interval);
      if (msg.stream === names[0] && data.e === 'kline' && data.k) {
        var k = data.k;
        view.upsert({ t: k.t, o: k.o, h: k.h, l: k.l, c: k.c, v: k.v, n: k.n });
        state.klines++;
      } else if (msg.stream === names[1] && data.e === 'alert') {
        var a = alertItem(data);
        listAlert(a);
        if (a.interval === state.interval) view.addAlert(a);
        state.alerts++;
      }
    }

    function onMessage(msg) {
      if (!msg || msg.stream == null) return; // {"result": null, "id": n}: a (un)subscribe done
      state.lastMessageMs = Date.now();
      if (state.loading) pending.push(msg);
      else apply(msg);
    }

    function load() {
      var gen = ++generation;
      var key = state.symbol;
      var interval = state.interval;
      state.loading = true;
      pending = [];
      var q = 'symbol=' + encodeURIComponent(key);
      return getJSON('api/v3/klines?' + q + '&interval=' + encodeURIComponent(interval) + '&limit=500')
        .then(function (klines) {
          var bars = klines.map(klineBar);
          var since = bars.length ? bars[0].t : Date.now() - 86400000;
          return getJSON('api/v1/alerts?' + q + '&since=' + since).then(function (alerts) {
            return [bars, alerts];
          });
        })
        .then(function (got) {
          if (gen !== generation) return;
          var alerts = got[1].map(alertItem).sort(function (x, y) {
            return x.ts_ms - y.ts_ms;
          });
          view.setBars(got[0], key + ' ' + interval);
          view.setAlerts(alerts.filter(function (a) { return a.interval === interval; }));
          list.textContent = '';
          listed = new Map();
          alerts.slice(-MAX_ALERT_LIST).forEach(listAlert);
          state.loading = false;
          state.error = null;
          var queued = pending;
          pending = [];
          queued.forEach(apply);
        })
        .catch(function (err) {
          if (gen !== generation) return;
          state.error = errorText(err);
          setStatus('down', 'history: ' + state.error + '; retrying');
          setTimeout(function () {
            if (gen === generation) load();
          }, 3000);
        });
    }

    var stream = new Stream(onMessage, setStatus, load);

    function select(key, interval) {
      if (state.symbols.indexOf(key) < 0) key = state.symbols[0];
      if (state.intervals.indexOf(interval) < 0) {
        interval = state.intervals.indexOf('1m') >= 0 ? '1m' : state.intervals[0];
      }
      if (!key || !interval) return Promise.resolve(false);
      symbolSelect.value = key;
      intervalSelect.value = interval;
      state.symbol = key;
      state.interval = interval;
      remember(key, interval);
      view.clear();
      stream.set(streamNames(key, interval)); // subscribe first: nothing between history and live
      return load().then(function () {
        return true;
      });
    }

    function resolve(want, markets) {
      var key = want.symbol;
      if (key && key.indexOf(':') < 0) key = markets.default_venue + ':' + key;
      if (key) {
        var low = key.toLowerCase();
        var found = state.symbols.filter(function (s) { return s.toLowerCase() === low; });
        key = found[0] || key;
      }
      return key;
    }

    var markets = null;
    function start() {
      getJSON('api/v1/markets')
        .then(function (m) {
          markets = m;
          state.symbols = m.symbols.map(function (s) { return s.venue + ':' + s.symbol; });
          state.intervals = m.intervals.slice();
          fill(symbolSelect, state.symbols);
          fill(intervalSelect, state.intervals);
          var want = chosen();
          if (!state.symbols.length) {
            state.loading = false;
            setStatus('down', 'no symbols yet');
            setTimeout(start, 5000);
            return;
          }
          select(resolve(want, m), want.interval);
        })
        .catch(function (err) {
          state.error = errorText(err);
          setStatus('down', 'markets: ' + state.error + '; retrying');
          setTimeout(start, 3000);
        });
    }

    symbolSelect.addEventListener('change', function () {
      select(symbolSelect.value, state.interval);
    });
    intervalSelect.addEventListener('change', function () {
      select(state.symbol, intervalSelect.value);
    });
    window.addEventListener('hashchange', function () {
      if (!markets) return;
      var want = chosen();
      var key = resolve(want, markets);
      if (key !== state.symbol || want.interval !== state.interval) select(key, want.interval);
    });
    hook(view, {
      mode: 'live',
      state: function () {
        var copy = {};
        for (var k in state) copy[k] = Array.isArray(state[k]) ? state[k].slice() : state[k];
        return copy;
      },
      select: select,
    });
    start();
  }

  function boot() {
    var mode = document.body.getAttribute('data-candlewax');
    if (!LWC) {
      document.body.insertBefore(
        el('p', 'cw-status down', 'The chart library did not load (static/vendor/: run `make web`).'),
        document.body.firstChild
      );
      return;
    }
    if (mode === 'report') report(JSON.parse(document.getElementById('cw-data').textContent));
    else if (mode === 'live') live();
  }

  window.Candlewax = { CandleView: CandleView, report: report, live: live };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();

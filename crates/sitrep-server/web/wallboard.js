// The sitrep wallboard: one live page fed by Server-Sent Events from /api/v1/events.
//
// It loads the directory and catalogue, opens the event stream for its scope (URL parameters), renders a tile per
// provider grouped by system with totals above, and then updates only what each event changes. Event ids are
// cursors: when the link drops it reconnects by itself, forever, with backoff, resuming from the last cursor it saw
// (the server replays exactly what was missed, or sends a reset and a fresh snapshot). Nothing here needs a build
// step or a library.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  if (params.get("theme") === "light") document.body.classList.add("light");

  // The scope: the same filters the API takes.
  const scope = { provider: [], system: [], region: [] };
  for (const key of Object.keys(scope)) {
    for (const v of params.getAll(key)) scope[key].push(...v.split(",").map((s) => s.trim()).filter(Boolean));
  }
  const scopeQuery = Object.entries(scope)
    .flatMap(([k, list]) => list.map((v) => `${k}=${encodeURIComponent(v)}`))
    .join("&");

  // What each tile shows: the few numbers a coordinator scans first.
  const ROWS = [
    { label: "Adult CC: open / occupied / free", wide: true, metrics: ["beds.cc_adult.open", "beds.cc_adult.occupied", "beds.cc_adult.free"], rated: ["beds.cc_adult.occupancy", "beds.cc_adult.occupancy", "beds.cc_adult.free"], delta: "beds.cc_adult.free" },
    { label: "G&A occupancy", metrics: ["beds.ga_adult.occupancy"], delta: "beds.ga_adult.occupancy" },
    { label: "ED over 12 h", metrics: ["ed.over_12h"], delta: "ed.over_12h" },
    { label: "Handovers > 60 min", metrics: ["ambulance.handover_over_60"], delta: "ambulance.handover_over_60" },
  ];

  const FLASH = [{ boxShadow: "0 0 0 4px #58a6ff" }, { boxShadow: "0 0 0 0 rgba(0, 0, 0, 0)" }];

  const state = {
    directory: null,
    units: {},
    providers: new Map(), // code -> { period, received_at, stale, figures: Map(metric -> {value, rag}), opel, alerts: Map }
    rollups: new Map(), // "level:code" -> { scope, providers, reporting, stale, figures: Map }
    previous: { providers: {}, rollups: {} }, // figures of the hour before the current one
    cursor: null,
    source: null,
    backoff: 1000,
    serverOffset: 0, // server clock minus ours, from heartbeats
    changes: [],
  };

  // Measurements the browser test reads: time from an SSE message arriving to the DOM reflecting it.
  // `samples`: the handler's own work, up to the DOM being updated; `frames`: until the next frame is drawn.
  const stats = (window.sitrepStats = { events: 0, snapshots: 0, samples: [], frames: [], connects: 0, resets: 0, flashes: 0 });

  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  function fmt(metric, v) {
    if (v === null || v === undefined) return "–";
    const unit = state.units[metric];
    const text = Number.isInteger(v) ? String(v) : v.toFixed(1);
    return unit === "percent" ? `${text}%` : text;
  }

  function hhmm(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function setLink(kind, text) {
    const link = $("#link");
    link.className = `link ${kind}`;
    link.textContent = text || kind;
  }

  // ---- building the page ---------------------------------------------------------------------------------------

  function inScope(p) {
    const system = state.directory.systems.find((s) => s.code === p.system);
    if (!scope.provider.length && !scope.system.length && !scope.region.length) return true;
    return scope.provider.includes(p.code) || scope.system.includes(p.system) || (system && scope.region.includes(system.region));
  }

  function scopeTitle() {
    const d = state.directory;
    const names = [
      ...scope.region.map((r) => (d.regions.find((x) => x.code === r) || { name: r }).name),
      ...scope.system.map((s) => (d.systems.find((x) => x.code === s) || { name: s }).name),
      ...scope.provider,
    ];
    return names.length ? names.join(", ") : d.nation.name;
  }

  function rowsInto(card, prefix) {
    for (const row of ROWS) {
      const r = el("div", row.wide ? "row wide" : "row");
      r.append(el("span", "label", row.label));
      const cells = el("span", "cells");
      row.metrics.forEach((m, i) => {
        if (i > 0) cells.append(el("span", "sep", "/"));
        const c = el("span", "cell", "–");
        c.dataset.metric = m;
        c.dataset.rated = (row.rated && row.rated[i]) || m;
        cells.append(c);
      });
      const d = el("span", "delta", "");
      d.dataset.delta = row.delta;
      cells.append(d);
      r.append(cells);
      card.append(r);
    }
    card.id = prefix;
  }

  function buildTotal(key, label, systemTotal) {
    const card = el("div", systemTotal ? "total system-total" : "total");
    const h = el("h3");
    h.append(el("span", "name", label), el("span", "opel", "OPEL –"));
    card.append(h);
    rowsInto(card, `total-${key.replace(":", "-")}`);
    card.append(el("div", "fresh", ""));
    return card;
  }

  function build() {
    const d = state.directory;
    $("#scope-name").textContent = scopeTitle();
    document.title = `sitrep · ${scopeTitle()}`;
    const providers = d.providers.filter(inScope);
    const systems = d.systems.filter((s) => providers.some((p) => p.system === s.code));
    const regions = d.regions.filter((r) => systems.some((s) => s.region === r.code));
    const totals = $("#totals");
    totals.replaceChildren();
    if (!scope.system.length && !scope.provider.length && !scope.region.length) {
      totals.append(buildTotal(`nation:${d.nation.code}`, d.nation.name));
    }
    for (const r of regions) totals.append(buildTotal(`region:${r.code}`, r.name));
    const root = $("#systems");
    root.replaceChildren();
    for (const s of systems) {
      const section = el("section", "system");
      section.append(el("h2", null, `${s.name} (${s.code})`));
      const tiles = el("div", "tiles");
      tiles.append(buildTotal(`system:${s.code}`, `${s.code} total`, true));
      for (const p of providers.filter((p) => p.system === s.code)) {
        const tile = el("div", "tile never");
        const h = el("h3");
        const name = el("span", "name", p.name);
        name.title = p.name;
        const badge = el("span", "opel", "OPEL –");
        h.append(name, el("span", "code", p.code), badge);
        tile.append(h);
        rowsInto(tile, `tile-${p.code}`);
        tile.append(el("div", "fresh", "no report yet"));
        tiles.append(tile);
      }
      section.append(tiles);
      root.append(section);
    }
  }

  // ---- painting values -----------------------------------------------------------------------------------------

  function paintCells(card, figures, previous, flash) {
    if (!card) return;
    for (const c of card.querySelectorAll(".cell")) {
      const f = figures.get(c.dataset.metric);
      const text = fmt(c.dataset.metric, f ? f.value : null);
      if (c.textContent !== text) {
        c.textContent = text;
        if (flash) {
          // The Web Animations API restarts the flash without forcing a layout of the whole page.
          c.classList.add("flash");
          stats.flashes += 1;
          const anim = c.animate(FLASH, { duration: 1200, easing: "ease-out" });
          anim.onfinish = () => c.classList.remove("flash");
        }
      }
      const rated = figures.get(c.dataset.rated);
      const rag = rated && rated.rag ? rated.rag : "";
      if (c.dataset.rag !== rag) {
        c.classList.remove("green", "amber", "red");
        if (rag) c.classList.add(rag);
        c.dataset.rag = rag;
      }
    }
    for (const d of card.querySelectorAll(".delta")) {
      const now = figures.get(d.dataset.delta);
      const before = previous ? previous[d.dataset.delta] : undefined;
      if (!now || now.value === null || before === undefined || before === null) {
        d.textContent = "";
        d.className = "delta";
        continue;
      }
      const diff = now.value - before;
      const text = Math.abs(diff) < 0.05 ? "=" : `${diff > 0 ? "▲" : "▼"}${fmt(d.dataset.delta, Math.abs(diff))}`;
      d.textContent = text;
      d.className = `delta ${diff > 0.05 ? "up" : diff < -0.05 ? "down" : ""}`;
      d.title = "change since the previous hour";
    }
  }

  function paintOpel(card, opel) {
    const badge = card && card.querySelector(".opel");
    if (!badge) return;
    const declared = opel && opel.declared;
    const computed = opel && opel.computed ? opel.computed.level : null;
    badge.textContent = `OPEL ${declared || "–"}`;
    badge.className = `opel${declared ? ` l${declared}` : ""}${opel && opel.mismatch ? " mismatch" : ""}`;
    badge.dataset.computed = computed ? String(computed) : "";
    badge.title = opel && opel.computed
      ? `declared ${declared || "none"}; computed ${opel.computed.explanation ||
        `OPEL ${opel.computed.level} (score ${opel.computed.score} of ${opel.computed.max_score})`}`
      : "no level computed";
  }

  function paintProvider(code, flash) {
    const p = state.providers.get(code);
    const tile = document.getElementById(`tile-${code}`);
    if (!p || !tile) return;
    paintCells(tile, p.figures, state.previous.providers[code], flash);
    paintOpel(tile, p.opel);
    tile.classList.remove("never");
    tile.classList.toggle("stale", !!p.stale);
    $(".fresh", tile).textContent = freshness(p.received_at);
  }

  function paintRollup(key, flash) {
    const r = state.rollups.get(key);
    const card = document.getElementById(`total-${key.replace(":", "-")}`);
    if (!r || !card) return;
    paintCells(card, r.figures, state.previous.rollups[key], flash);
    const opel = r.figures.get("opel.level");
    paintOpel(card, { declared: opel ? opel.value : null });
    $(".fresh", card).textContent = `${r.reporting}/${r.providers} reporting${r.stale ? ` · ${r.stale} stale` : ""}`;
  }

  function freshness(ms) {
    if (!ms) return "no report yet";
    const minutes = Math.max(0, Math.round((Date.now() + state.serverOffset - ms) / 60000));
    return `reported ${hhmm(ms)} · ${minutes < 1 ? "just now" : `${minutes} min ago`}`;
  }

  // The tickers summarise every provider: redraw them at most once a frame, however many events arrive.
  let tickersDue = false;
  function scheduleTickers() {
    if (tickersDue) return;
    tickersDue = true;
    requestAnimationFrame(() => {
      tickersDue = false;
      paintTickers();
    });
  }

  function paintTickers() {
    const alerts = [];
    for (const p of state.providers.values()) for (const a of p.alerts.values()) alerts.push(a);
    alerts.sort((a, b) => (a.severity === b.severity ? b.raised_at - a.raised_at : a.severity === "critical" ? -1 : 1));
    const box = $("#alerts");
    box.replaceChildren(el("span", "item", `${alerts.length} open alert${alerts.length === 1 ? "" : "s"}:`));
    for (const a of alerts.slice(0, 30)) {
      const item = el("span", `item ${a.severity}`);
      item.append(el("span", "when", hhmm(a.raised_at)), document.createTextNode(a.message));
      box.append(item);
    }
    const changes = $("#changes");
    changes.replaceChildren(el("span", "item", "Latest:"));
    for (const c of state.changes) {
      const item = el("span", "item");
      item.append(el("span", "when", hhmm(c.at)), document.createTextNode(c.text));
      changes.append(item);
    }
  }

  // ---- the stream ----------------------------------------------------------------------------------------------

  function figuresOf(list) {
    const m = new Map();
    for (const f of list || []) m.set(f.metric, { value: f.value, rag: f.rag || null });
    return m;
  }

  // A large snapshot comes in parts (same cursor, `more` on all but the last; the first carries the rollups).
  let snapshotOpen = false;

  function onSnapshot(s) {
    if (!snapshotOpen) {
      state.providers.clear();
      state.rollups.clear();
    }
    snapshotOpen = !!s.more;
    for (const p of s.providers) {
      state.providers.set(p.provider, {
        period: p.period,
        received_at: p.received_at,
        stale: p.stale,
        figures: figuresOf(p.figures),
        opel: p.opel,
        alerts: new Map(p.alerts.map((a) => [a.key, a])),
      });
    }
    for (const r of s.rollups) {
      const key = `${r.scope.level}:${r.scope.code}`;
      state.rollups.set(key, { ...r, figures: figuresOf(r.metrics) });
    }
    if (snapshotOpen) return;
    for (const tile of document.querySelectorAll(".tile")) tile.classList.add("never");
    for (const code of state.providers.keys()) paintProvider(code, false);
    for (const key of state.rollups.keys()) paintRollup(key, false);
    paintTickers();
    stats.snapshots += 1;
  }

  function onEvent(e) {
    let p = state.providers.get(e.provider);
    if (e.live || e.kind === "stale") {
      if (!p) {
        p = { period: e.period, received_at: e.received_at, stale: false, figures: new Map(), opel: null, alerts: new Map() };
        state.providers.set(e.provider, p);
      }
      if (e.kind === "stale") {
        p.stale = true;
      } else {
        if (e.period > p.period) {
          // A new hour: what the provider said last becomes the hour it is compared with.
          const before = {};
          for (const [m, f] of p.figures) before[m] = f.value;
          state.previous.providers[e.provider] = before;
        }
        p.period = e.period;
        p.received_at = e.received_at;
        p.stale = false;
        // An event names its metrics once; figures are [index, value, rag] and rollups arrays aligned with them.
        for (const [i, value, rag] of e.figures) {
          if (value === null || value === undefined) p.figures.delete(e.metrics[i]);
          else p.figures.set(e.metrics[i], { value, rag: rag || null });
        }
        if (e.opel) p.opel = e.opel;
      }
      for (const key of e.cleared || []) p.alerts.delete(key);
      for (const a of e.raised || []) p.alerts.set(a.key, a);
      for (const r of e.rollups) {
        updateRollup(r, e.metrics.map((metric, i) => ({ metric, value: r.value[i], rag: r.rag[i], n: r.n[i] })));
      }
      paintProvider(e.provider, true);
    }
    const what = e.kind === "stale"
      ? "missed its report (stale)"
      : e.changes.slice(0, 3).map(([i, , after]) => `${e.metrics[i]} ${typeof after === "number" ? fmt(e.metrics[i], after) : "absent"}`).join(", ") +
        (e.changes.length > 3 ? ` +${e.changes.length - 3}` : "") + (e.live ? "" : " (correction)");
    state.changes.unshift({ at: e.received_at, text: `${e.provider}: ${what || "no change"}` });
    state.changes.length = Math.min(state.changes.length, 12);
    scheduleTickers();
  }

  // A scope's counts and the figures that changed ({metric, value, rag, n}; no value: it has none now).
  function updateRollup(r, figures) {
    const key = `${r.scope.level}:${r.scope.code}`;
    const known = state.rollups.get(key) || { scope: r.scope, figures: new Map() };
    known.providers = r.providers;
    known.reporting = r.reporting;
    known.stale = r.stale;
    for (const f of figures) {
      if (f.value === null || f.value === undefined) known.figures.delete(f.metric);
      else known.figures.set(f.metric, { value: f.value, rag: f.rag || null, n: f.n });
    }
    state.rollups.set(key, known);
    paintRollup(key, true);
  }

  // Totals of a region or the nation that providers outside this wall's scope moved.
  function onRollups(m) {
    for (const r of m.rollups) updateRollup(r, r.metrics);
  }

  function connect() {
    const query = [scopeQuery, state.cursor ? `last_event_id=${encodeURIComponent(state.cursor)}` : "", "heartbeat=10"]
      .filter(Boolean)
      .join("&");
    const source = new EventSource(`api/v1/events?${query}`);
    state.source = source;
    stats.connects += 1;
    const handle = (name, fn) =>
      source.addEventListener(name, (msg) => {
        const t0 = performance.now();
        if (msg.lastEventId) state.cursor = msg.lastEventId;
        fn(JSON.parse(msg.data));
        if (name === "event") {
          stats.events += 1;
          stats.samples.push(performance.now() - t0);
          requestAnimationFrame(() => stats.frames.push(performance.now() - t0));
          if (stats.samples.length > 5000) stats.samples.shift();
          if (stats.frames.length > 5000) stats.frames.shift();
        }
      });
    source.onopen = () => {
      snapshotOpen = false;
      state.backoff = 1000;
      setLink("live");
    };
    handle("snapshot", onSnapshot);
    handle("event", onEvent);
    handle("rollups", onRollups);
    handle("heartbeat", (h) => {
      state.serverOffset = h.server_time - Date.now();
    });
    handle("reset", () => {
      stats.resets += 1;
    });
    handle("status", (s) => {
      const banner = $("#banner");
      banner.hidden = !s.degraded;
      banner.textContent = s.degraded ? `Figures may be out of date: ${s.message}` : "";
      setLink(s.degraded ? "degraded" : "live");
    });
    const retry = () => {
      source.close();
      if (state.source !== source) return;
      state.source = null;
      const delay = state.backoff * (0.5 + Math.random() / 2);
      state.backoff = Math.min(state.backoff * 2, 30000);
      setLink("reconnecting", `reconnecting in ${Math.round(delay / 1000)} s`);
      setTimeout(connect, delay);
    };
    source.addEventListener("error", (msg) => {
      // Either the server's own `error` event (it is going away) or the link failing: both mean reconnect.
      if (msg.data) console.warn("sitrep:", msg.data);
      retry();
    });
  }

  // ---- figures of the previous hour, refreshed as hours turn ---------------------------------------------------

  async function loadPrevious() {
    try {
      const r = await fetch(`api/v1/previous_hour?${scopeQuery}`);
      if (!r.ok) throw new Error(`${r.status}`);
      const prev = await r.json();
      state.previous = { providers: prev.providers || {}, rollups: prev.rollups || {} };
      for (const code of state.providers.keys()) paintProvider(code, false);
      for (const key of state.rollups.keys()) paintRollup(key, false);
    } catch (err) {
      console.warn("sitrep: previous hour unavailable", err);
    }
    const now = Date.now() + state.serverOffset;
    const nextHour = Math.ceil((now + 1) / 3600000) * 3600000;
    setTimeout(loadPrevious, nextHour - now + 15000);
  }

  function tick() {
    const now = new Date(Date.now() + state.serverOffset);
    $("#clock").textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  async function start() {
    tick();
    setInterval(tick, 1000);
    setInterval(() => {
      for (const code of state.providers.keys()) {
        const tile = document.getElementById(`tile-${code}`);
        if (tile) $(".fresh", tile).textContent = freshness(state.providers.get(code).received_at);
      }
    }, 15000);
    for (;;) {
      try {
        const [d, c] = await Promise.all([fetch("api/v1/directory"), fetch("api/v1/catalogue")]);
        if (!d.ok || !c.ok) throw new Error(`directory ${d.status}, catalogue ${c.status}`);
        state.directory = await d.json();
        const catalogue = await c.json();
        for (const m of [...catalogue.metrics, ...catalogue.derived]) state.units[m.code] = m.unit;
        break;
      } catch (err) {
        setLink("reconnecting", "waiting for sitrep");
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
    build();
    connect();
    loadPrevious();
  }

  start();
})();

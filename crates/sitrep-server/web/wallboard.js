// The sitrep wallboard: one live page fed by Server-Sent Events from /api/v1/events.
//
// It loads the directory and the catalogue, checks the scope its address names, opens the event stream for that
// scope, and renders the totals of the nation and regions above a grid of tiles (each system's total, then its
// providers), with the open alerts and what changed in the last hour beside them. After the first snapshot it
// updates only what each event changes. Event ids are cursors: when the link drops it reconnects by itself,
// forever, with backoff, resuming from the last cursor it saw. Nothing here needs a build step or a library.
//
// What a tile shows comes from the catalogue (labels, units, which way is worse), by the provider's service type;
// a deployment chooses the figures, time zone, theme and paging in its configuration ([wallboard]), and a screen's
// address may override them (see index.html). The grid is sized to fill the screen:
// up to `per_page` providers (default 60) share one page, and more than that are shown a page at a time, turning
// every `rotate` seconds. Nothing on the page scrolls: what is not on screen now is on the next page.
//
// A provider that reports by site (a hospital of a trust) has figures that are the rollup of its sites'; its tile
// adds a line for each site with the site's own values of the tile's first key figure its sites report. Events of a
// site carry that site's own changes (and the provider's new figures, as every event does), so the page keeps each
// site's readings from them, never mistaking a site's values for the provider's.
//
// Mutual aid (docs/MUTUAL-AID.md): the "Mutual aid" panel lists the open requests of the wall's scope, each with its
// age and the minutes left before it escalates to its system's, then its region's coordinators (the aggregator's
// `[aid]` timers, which /api/v1/aid/requests says). It loads them with the snapshot (on start and after every
// reconnect) and then follows the stream's `aid` events. A provider holding beds for an accepted offer says "2 held"
// beside that pair's free beds; scope totals say how many requests their providers have open and, when any went
// unmet, the unfulfilled rate (from the snapshot's `strain`, looked up again when a request closes).
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  // The deployment's settings ([wallboard] in the aggregator's configuration), which the address may override.
  let deployment = {};
  try {
    deployment = JSON.parse(document.getElementById("deployment")?.textContent || "{}");
  } catch (err) {
    console.warn("sitrep: the page's deployment settings are unreadable; using the defaults", err);
  }
  if ((params.get("theme") || deployment.theme) === "light") document.body.classList.add("light");

  // The scope: the same filters the API takes.
  const scope = { provider: [], system: [], region: [] };
  for (const key of Object.keys(scope)) {
    for (const v of params.getAll(key)) scope[key].push(...v.split(",").map((s) => s.trim()).filter(Boolean));
  }
  const scoped = scope.provider.length + scope.system.length + scope.region.length > 0;
  const scopeQuery = Object.entries(scope)
    .flatMap(([k, list]) => list.map((v) => `${k}=${encodeURIComponent(v)}`))
    .join("&");

  // Codes from the address (comma separated), else `fallback` (the deployment's, when it names any).
  const codesParam = (name, fallback) =>
    params.has(name)
      ? params.get(name).split(",").map((s) => s.trim()).filter(Boolean)
      : fallback && fallback.length ? fallback : null;
  const numberParam = (name, fallback, min, max) => {
    const n = Number(params.get(name));
    return Math.min(max, Math.max(min, params.has(name) && Number.isFinite(n) ? n : fallback));
  };

  // The key figures of each service type, by catalogue code (labels and units come from the catalogue); each may
  // be replaced with ?figures.<type>=code,code. A derived figure shows the inputs it is made of beside it.
  const KEY_FIGURES = {
    acute: ["beds.cc_adult.free", "beds.ga_adult.occupancy", "ed.over_12h", "ambulance.handover_over_60"],
    specialist: ["beds.cc_paed.free", "beds.ga_paed.occupancy", "beds.cc_adult.free", "ventilators.utilisation"],
    mental_health: ["beds.mh_adult.occupancy", "staff.absence_percent"],
    community: ["beds.ga_adult.free", "beds.ga_adult.occupancy", "staff.absence_percent"],
    ambulance: ["staff.absence_percent", "ambulance.handover_mean_minutes", "ambulance.handover_over_60"],
  };
  // The figures of totals (system tiles show the first few): ?totals=code,code.
  const TOTAL_FIGURES = ["beds.cc_adult.free", "beds.ga_adult.occupancy", "ed.over_12h", "beds.mh_adult.occupancy",
    "ambulance.handover_over_60", "beds.cc_paed.free"];

  const settings = {
    perPage: Math.round(numberParam("per_page", deployment.per_page || 60, 1, 500)),
    rotateMs: numberParam("rotate", deployment.rotate_seconds || 20, 3, 3600) * 1000,
    timeZone: params.get("tz") || deployment.timezone || "Europe/London",
  };

  const FLASH = [{ boxShadow: "0 0 0 0.15em var(--flash)" }, { boxShadow: "0 0 0 0 rgba(0, 0, 0, 0)" }];
  const HOUR = 3600000;

  const state = {
    directory: null,
    catalogue: new Map(), // code -> metric or derived metric, with `inputs` and `words` for derived ones
    figures: {}, // service type -> codes its tiles show
    totals: [], // codes totals show
    providers: new Map(), // code -> { period, received_at, stale, narrative, said, figures: Map(metric -> {value, rag}), opel, alerts: Map, sites }
    // A provider's `sites`: Map(site code -> { period, revision, received_at, readings: Map(metric -> value) }), empty
    // while it reports only as a whole; `said`: the site whose report the narrative came from (null: the whole).
    siteNames: new Map(), // "provider/site" -> the site's short name
    rollups: new Map(), // "level:code" -> { scope, providers, reporting, stale, figures: Map(metric -> {value, rag, n}) }
    previous: { providers: {}, rollups: {} }, // figures of the hour before the current one
    changes: [], // the last hour, newest first: { key, at, provider, site, changes, narrative, note }
    aid: new Map(), // request id -> { request, offers }: the open mutual aid requests the wall can see
    aidTimers: null, // { system_after_ms, region_after_ms }: when an open request escalates, after its creation
    cursor: null,
    source: null,
    backoff: 1000,
    serverOffset: 0, // server clock minus ours, from heartbeats
    pages: [[]], // cells (elements) of each page
    page: 0,
    alertPage: 0,
    alertPages: 1,
    opened: false,
  };

  // Measurements the browser test reads: time from an SSE message arriving to the DOM reflecting it.
  // `samples`: the handler's own work, up to the DOM being updated; `frames`: until the next frame is drawn.
  const stats = (window.sitrepStats = { events: 0, snapshots: 0, samples: [], frames: [], connects: 0, resets: 0, flashes: 0, layouts: 0 });

  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const now = () => Date.now() + state.serverOffset;

  // ---- words and numbers --------------------------------------------------------------------------------------

  let timeFormat, dayFormat, zoneFormat;
  function setTimeZone(zone) {
    const opts = { timeZone: zone, hourCycle: "h23" };
    timeFormat = new Intl.DateTimeFormat("en-GB", { ...opts, hour: "2-digit", minute: "2-digit" });
    dayFormat = new Intl.DateTimeFormat("en-GB", { timeZone: zone, day: "numeric", month: "short" });
    zoneFormat = new Intl.DateTimeFormat("en-GB", { ...opts, hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });
  }
  try {
    setTimeZone(settings.timeZone);
  } catch (err) {
    console.warn(`sitrep: unknown time zone ${settings.timeZone}; using Europe/London`);
    settings.timeZone = "Europe/London";
    setTimeZone(settings.timeZone);
  }

  // 14:05 today (in the deployment's zone), "3 Dec 14:05" on another day.
  function when(ms) {
    const t = timeFormat.format(ms);
    return dayFormat.format(ms) === dayFormat.format(now()) ? t : `${dayFormat.format(ms)} ${t}`;
  }

  function age(ms) {
    const minutes = Math.max(0, Math.floor((now() - ms) / 60000));
    if (minutes < 1) return "just now";
    if (minutes < 60) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return `${hours} h ${minutes % 60} min`;
    return `${Math.floor(hours / 24)} days`;
  }

  // How old the figures for the hour starting at `period` are: "this hour", or how long ago the hour began.
  function periodAge(period) {
    return now() - period < HOUR ? "this hour" : `${age(period)} ago`;
  }

  function label(code) {
    const m = state.catalogue.get(code);
    return m ? m.label : code;
  }

  function fmt(metric, v) {
    if (v === null || v === undefined || typeof v !== "number") return "–";
    const m = state.catalogue.get(metric);
    const text = Number.isInteger(v) ? String(v) : v.toFixed(1);
    return m && m.unit === "percent" ? `${text}%` : text;
  }

  // Which way is worse for a metric: +1 higher, -1 lower, 0 neither. From its own rating when it has one, else
  // from a rated derived metric it is an input of (more occupied beds raise occupancy, which is worse; more open
  // beds lower it, which is better).
  function worseWay(metric) {
    const own = (m) => {
      const dir = m && m.rag && m.rag.direction;
      return dir === "higher_is_worse" ? 1 : dir === "lower_is_worse" ? -1 : 0;
    };
    const m = state.catalogue.get(metric);
    if (!m) return 0;
    if (m.worse === undefined) {
      m.worse = own(m);
      for (const d of state.catalogue.values()) {
        if (m.worse || !d.inputs || !own(d)) continue;
        const at = d.inputs.indexOf(metric);
        if (at >= 0) m.worse = at === 0 ? own(d) : -own(d);
      }
    }
    return m.worse;
  }

  function shortName(name) {
    return name.replace(/ NHS Foundation Trust$| NHS Trust$/, "");
  }

  // A site as a tile names it: "St George's" for St George's Hospital (the tile already says which trust).
  function siteName(provider, site) {
    return state.siteNames.get(`${provider}/${site}`) || site;
  }

  function shortSiteName(name) {
    return name.replace(/ Hospitals?$/, "") || name;
  }

  // The words that tell a derived figure's inputs apart ("open", "occupied"): what is left of their catalogue
  // labels after the words they share ("Adult critical care beds").
  function inputWords(inputs) {
    const words = inputs.map((c) => label(c).split(" "));
    let shared = 0;
    while (words.every((w) => w.length > shared && w[shared] === words[0][shared])) shared += 1;
    return words.map((w, i) => w.slice(shared).join(" ") || inputs[i].split(".").pop().replace(/_/g, " "));
  }

  // Messages come from the aggregator as sentences; here they lose the provider code they start with (the list
  // names the provider), metric codes become catalogue labels and ISO times become times in the local zone.
  function humanise(text, provider) {
    let t = provider && text.startsWith(`${provider}: `) ? text.slice(provider.length + 2) : text;
    t = t.replace(/\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)/g, (iso) => {
      const ms = Date.parse(iso);
      return Number.isNaN(ms) ? iso : when(ms);
    });
    return t.replace(/\b[a-z][a-z0-9_]*(\.[a-z0-9_]+)+\b/g, (code) => (state.catalogue.has(code) ? label(code) : code));
  }

  function setLink(kind, text) {
    const link = $("#link");
    link.className = `link ${kind}`;
    link.textContent = text || kind;
  }

  // ---- the scope ----------------------------------------------------------------------------------------------

  function inScope(p) {
    const system = state.directory.systems.find((s) => s.code === p.system);
    if (!scoped) return true;
    return scope.provider.includes(p.code) || scope.system.includes(p.system) || (system && scope.region.includes(system.region));
  }

  function scopeTitle() {
    const d = state.directory;
    const name = (list, code) => (list.find((x) => x.code === code) || { name: code }).name;
    const names = [
      ...scope.region.map((r) => name(d.regions, r)),
      ...scope.system.map((s) => name(d.systems, s)),
      ...scope.provider.map((p) => shortName(name(d.providers, p))),
    ];
    return names.length ? names.join(", ") : d.nation.name;
  }

  // Codes the address names that the directory does not have: shown on the page, and the page goes no further.
  function unknownScope() {
    const d = state.directory;
    const missing = [];
    const words = { region: ["region", d.regions], system: ["system", d.systems], provider: ["provider", d.providers] };
    for (const [key, [word, list]] of Object.entries(words)) {
      for (const code of scope[key]) if (!list.some((x) => x.code === code)) missing.push({ key, word, code, list });
    }
    return missing;
  }

  function showNotice(title, lines, choices) {
    const box = $("#notice");
    box.replaceChildren(el("h1", null, title), ...lines.map((l) => el("p", null, l)));
    if (choices) box.append(el("p", "choices", choices));
    box.hidden = false;
    for (const id of ["#totals", "#main"]) $(id).hidden = true;
    setLink("stopped", "not connected");
  }

  function badScope(missing) {
    const lines = missing.map((m) => `This wallboard's address asks for ${m.word} “${m.code}”, which is not in the directory.`);
    lines.push("Correct the address (the part after “?”) and reload the page.");
    const kinds = [...new Set(missing.map((m) => m.key))];
    const choices = kinds
      .map((k) => {
        const list = missing.find((m) => m.key === k).list;
        const shown = list.slice(0, 12).map((x) => `${x.code} (${x.name})`).join(", ");
        return `Known ${k === "system" ? "systems" : k === "region" ? "regions" : "providers"}: ${shown}${list.length > 12 ? ", …" : ""}`;
      })
      .join(". ");
    showNotice("Unknown scope", lines, choices);
    $("#scope-name").textContent = "unknown scope";
  }

  // ---- building the page ---------------------------------------------------------------------------------------

  function figureRow(code, withCover) {
    const m = state.catalogue.get(code);
    const row = el("div", "fig");
    row.dataset.key = code;
    const lab = el("span", "lab");
    const name = el("span", "label", label(code));
    name.title = m && m.description ? m.description : label(code);
    lab.append(name);
    const hint = el("span", "hint");
    if (m && m.inputs) {
      // A derived figure: the inputs it was made of, named by the words that tell them apart.
      const inputs = el("span", "inputs");
      m.inputs.forEach((input, i) => {
        if (i > 0) inputs.append(document.createTextNode(" · "));
        const c = el("span", "cell sub", "–");
        c.dataset.metric = input;
        inputs.append(c, document.createTextNode(` ${m.words[i]}`));
      });
      hint.append(inputs);
    }
    if (withCover) {
      // Coverage: how many of the scope's providers the figure counts; "partial" when a provider that reported
      // one of a derived figure's inputs is left out of it.
      const cover = el("span", "coverage");
      cover.dataset.cover = code;
      if (hint.childNodes.length) hint.append(document.createTextNode(" · "));
      hint.append(cover);
    }
    if (hint.childNodes.length) {
      lab.append(hint);
      row.classList.add("has-hint");
    }
    const val = el("span", "val");
    const cell = el("span", "cell", "–");
    cell.dataset.metric = code;
    const delta = el("span", "delta", "");
    delta.dataset.delta = code;
    val.append(cell, delta);
    row.append(lab, val);
    return row;
  }

  function buildCard(cls, id, name, codes, withCover) {
    const card = el("div", cls);
    card.id = id;
    const head = el("div", "head");
    const title = el("span", "name", name);
    title.title = name;
    head.append(title);
    const tile = cls.includes("system-total");
    if (withCover && !tile) head.append(el("span", "cover", ""));
    // A scope's derived CRITCON level (critical care escalation), when the deployment has a rule and a unit declared.
    if (withCover || tile) {
      const critcon = el("span", "critcon", "");
      critcon.hidden = true;
      head.append(critcon);
    }
    head.append(el("span", "opel", "OPEL –"));
    card.append(head);
    const figs = el("div", "figs");
    for (const code of codes) figs.append(figureRow(code, withCover));
    card.append(figs);
    // Mutual aid's strain signals of the scope, shown only when there are any.
    const strain = el("span", "strain", "");
    strain.hidden = true;
    if (tile) {
      const foot = el("div", "foot");
      foot.append(el("span", "code", "System total"), document.createTextNode(" · "), el("span", "cover", ""), strain);
      card.append(foot);
    } else if (withCover) {
      head.insertBefore(strain, head.querySelector(".opel"));
    }
    return card;
  }

  function totalId(key) {
    return `total-${key.replace(":", "-")}`;
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
    const strip = [];
    if (!scoped) strip.push([`nation:${d.nation.code}`, d.nation.name]);
    for (const r of regions) strip.push([`region:${r.code}`, r.name]);
    for (const [key, name] of strip) totals.append(buildCard("total card", totalId(key), name, state.totals, true));

    // The grid: each system's total, then its providers. Pages hold whole systems where they can.
    const grid = $("#grid");
    grid.replaceChildren();
    const pages = [[]];
    let onPage = 0;
    for (const s of systems) {
      const members = providers.filter((p) => p.system === s.code);
      const total = buildCard("total system-total", totalId(`system:${s.code}`), `${s.name}`, state.totals.slice(0, 4), true);
      total.dataset.rows = String(Math.min(4, state.totals.length));
      grid.append(total);
      if (onPage > 0 && onPage + members.length > settings.perPage) {
        pages.push([]);
        onPage = 0;
      }
      pages[pages.length - 1].push(total);
      for (const p of members) {
        if (onPage >= settings.perPage) {
          pages.push([]);
          onPage = 0;
        }
        const codes = state.figures[p.kind] || state.totals.slice(0, 4);
        const tile = buildCard("tile never", `tile-${p.code}`, shortName(p.name), codes, false);
        tile.title = `${p.name} (${p.code})`;
        tile.dataset.rows = String(codes.length);
        // The site breakdown, empty (and hidden) until the provider reports by site.
        const sites = el("div", "sites");
        sites.hidden = true;
        const foot = el("div", "foot");
        foot.append(el("span", "code", p.code), document.createTextNode(" · "), el("span", "fresh", "no report yet"), el("span", "said", ""));
        tile.append(sites, foot, el("div", "stale-badge", "STALE"));
        grid.append(tile);
        pages[pages.length - 1].push(tile);
        onPage += 1;
      }
    }
    state.pages = pages;
    state.page = 0;
    showPage();
  }

  // ---- fitting the grid to the screen, and turning pages -------------------------------------------------------

  // A tile's size in ems (at the grid's font size): its head, figure rows, site lines, foot and frame. A site line
  // is .sites' font size times its line height; the breakdown's rule and padding add a little.
  const TILE_EM_WIDE = 17;
  const DENSE_EM_WIDE = 14;
  const SITE_LINE_EM = 0.78 * 1.3;
  const tileEmHigh = (rows, siteLines = 0) => 1.45 + rows * 1.95 + (siteLines ? 0.25 + siteLines * SITE_LINE_EM : 0) + 1.5 + 1.0;
  // A breakdown longer than this ends with a line saying how many more sites there are.
  const MOST_SITE_LINES = 4;

  function showPage() {
    const current = new Set(state.pages[state.page] || []);
    for (const cell of $("#grid").children) cell.hidden = !current.has(cell);
    const pager = $("#pager");
    pager.hidden = state.pages.length < 2;
    if (state.pages.length > 1) {
      pager.replaceChildren(document.createTextNode(`Page ${state.page + 1} of ${state.pages.length}`));
      for (let i = 0; i < state.pages.length; i += 1) pager.append(el("span", i === state.page ? "dot on" : "dot"));
    }
    fit();
  }

  // Chooses the columns, row height and font size at which this page's tiles fill the space, as large as they fit.
  // When that would make the text smaller than is readable, tiles give up what is secondary first: a site breakdown
  // shrinks to one line (each site's key value, side by side), then goes; then tiles show fewer figure rows (their
  // first ones), with the one-line breakdown if that is readable.
  function fit() {
    const grid = $("#grid");
    const wall = $("#wall");
    const cells = state.pages[state.page] || [];
    const n = cells.length;
    if (!n || !wall.clientHeight) return;
    stats.layouts += 1;
    const W = wall.clientWidth;
    const H = wall.clientHeight;
    const gap = 0.35;
    const rows = Math.max(1, ...cells.map((c) => Number(c.dataset.rows) || 1));
    const siteLines = Math.max(0, ...cells.map((c) => Number(c.dataset.sites) || 0));
    // Every tile of the grid is as high as the highest: the one with the most rows and site lines together.
    const highest = (shown, sites) =>
      Math.max(...cells.map((c) => {
        const lines = Number(c.dataset.sites) || 0;
        return tileEmHigh(Math.min(shown, Number(c.dataset.rows) || 1), sites === "list" ? lines : sites === "line" ? Math.min(1, lines) : 0);
      }));
    const best = (emWide, emHigh) => {
      let top = { size: 0, cols: 1 };
      for (let cols = 1; cols <= n; cols += 1) {
        const lines = Math.ceil(n / cols);
        const size = Math.min(W / (cols * emWide + (cols - 1) * gap), H / (lines * emHigh + (lines - 1) * gap));
        if (size > top.size) top = { size, cols };
      }
      return top;
    };
    const readable = 13 * Math.min(innerHeight / 1080, innerWidth / 1920);
    // The layouts to try, best first; the first readable one is taken, else the last.
    const layouts = [];
    if (siteLines > 0) layouts.push({ shown: rows, sites: "list", dense: false });
    if (siteLines > 1) layouts.push({ shown: rows, sites: "line", dense: false });
    layouts.push({ shown: rows, sites: "none", dense: false });
    if (rows > 2) {
      if (siteLines > 0) layouts.push({ shown: 2, sites: "line", dense: true });
      layouts.push({ shown: 2, sites: "none", dense: true });
    }
    let layout, choice;
    for (layout of layouts) {
      choice = best(layout.dense ? DENSE_EM_WIDE : TILE_EM_WIDE, highest(layout.shown, layout.sites));
      if (choice.size >= readable) break;
    }
    const { shown, dense } = layout;
    const size = Math.floor(choice.size * 10) / 10;
    const lines = Math.ceil(n / choice.cols);
    grid.classList.toggle("dense", dense);
    grid.dataset.sites = layout.sites;
    grid.style.fontSize = `${size}px`;
    grid.style.gridTemplateColumns = `repeat(${choice.cols}, minmax(0, 1fr))`;
    grid.style.gridAutoRows = `${Math.floor((H - (lines - 1) * gap * size) / lines)}px`;
    for (const cell of cells) {
      const figs = cell.querySelectorAll(".fig");
      figs.forEach((f, i) => (f.hidden = i >= shown));
    }
  }

  function turnPage() {
    if (state.pages.length > 1) {
      state.page = (state.page + 1) % state.pages.length;
      showPage();
    }
    if (state.alertPages > 1) {
      state.alertPage = (state.alertPage + 1) % state.alertPages;
      showAlertPage();
    }
  }

  // ---- painting values -----------------------------------------------------------------------------------------

  const RANK = { green: 1, amber: 2, red: 3 };

  function worstOf(figures) {
    let worst = "";
    for (const f of figures.values()) if (f.rag && (RANK[f.rag] || 0) > (RANK[worst] || 0)) worst = f.rag;
    return worst;
  }

  function frame(card, worst) {
    if (card.dataset.worst === worst) return;
    card.classList.remove("worst-green", "worst-amber", "worst-red");
    if (worst) card.classList.add(`worst-${worst}`);
    card.dataset.worst = worst;
  }

  function paintCells(card, figures, previous, flash) {
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
      if (c.classList.contains("sub")) continue;
      const rag = f && f.rag ? f.rag : "";
      if (c.dataset.rag !== rag) {
        c.classList.remove("green", "amber", "red");
        if (rag) c.classList.add(rag);
        c.dataset.rag = rag;
      }
    }
    for (const d of card.querySelectorAll(".delta")) {
      const metric = d.dataset.delta;
      const now = figures.get(metric);
      const before = previous ? previous[metric] : undefined;
      if (!now || typeof now.value !== "number" || typeof before !== "number") {
        if (d.textContent) {
          d.textContent = "";
          d.className = "delta";
        }
        continue;
      }
      const diff = now.value - before;
      const still = Math.abs(diff) < 0.05;
      const worse = worseWay(metric);
      const verdict = still || !worse ? "" : Math.sign(diff) === worse ? " bad" : " good";
      d.textContent = still ? "=" : `${diff > 0 ? "▲" : "▼"}${fmt(metric, Math.abs(diff))}`;
      d.className = `delta${verdict}`;
      d.title = `change since the previous hour${verdict ? (verdict === " bad" ? " (worse)" : " (better)") : ""}`;
    }
  }

  function paintOpel(card, opel) {
    const badge = card.querySelector(".opel");
    if (!badge) return;
    const declared = opel && opel.declared;
    const computed = opel && opel.computed ? opel.computed.level : null;
    badge.replaceChildren(document.createTextNode(`OPEL ${declared || "–"}`));
    if (opel && opel.mismatch && computed) badge.append(el("span", "computed", ` ≠ ${computed}`));
    badge.className = `opel${declared ? ` l${declared}` : ""}${opel && opel.mismatch ? " mismatch" : ""}`;
    badge.title = opel && opel.computed
      ? `declared ${declared || "none"}; computed ${opel.computed.explanation ||
        `OPEL ${opel.computed.level} (score ${opel.computed.score} of ${opel.computed.max_score})`}`
      : "no level computed";
  }

  // "CRITCON 4", explained on hover like the computed OPEL level; hidden without a level.
  function paintCritcon(card, critcon) {
    const badge = card.querySelector(".critcon");
    if (!badge) return;
    badge.hidden = !critcon;
    if (!critcon) return;
    badge.textContent = `CRITCON ${critcon.level}`;
    badge.className = `critcon l${critcon.level}`;
    badge.title = `${critcon.explanation}${critcon.example_rule ? " (example rule, not the published one)" : ""}`;
  }

  function paintProvider(code, flash) {
    const p = state.providers.get(code);
    const tile = document.getElementById(`tile-${code}`);
    if (!p || !tile) return;
    paintCells(tile, p.figures, state.previous.providers[code], flash);
    paintOpel(tile, p.opel);
    tile.classList.remove("never");
    tile.classList.toggle("stale", !!p.stale);
    // A stale provider's figures are out of the totals and unrated: its frame says so rather than a colour.
    frame(tile, p.stale ? "" : worstOf(p.figures));
    paintFresh(tile, p);
    paintSites(tile, code, p, flash);
    paintHeld(tile, p);
  }

  // Beds the provider holds for accepted mutual aid offers: "2 held" beside the pair's free beds (held beds are
  // already counted out of them), or in the foot when the tile does not show that figure.
  function paintHeld(tile, p) {
    const held = new Map();
    for (const h of p.holds || []) held.set(h.pair, (held.get(h.pair) || 0) + h.quantity);
    const placed = new Set();
    for (const row of tile.querySelectorAll(".fig")) {
      const pair = row.dataset.key.endsWith(".free") ? row.dataset.key.slice(0, -".free".length) : null;
      const n = pair ? held.get(pair) || 0 : 0;
      let mark = row.querySelector(".held");
      if (!n) {
        if (mark) mark.remove();
        continue;
      }
      placed.add(pair);
      if (!mark) {
        mark = el("span", "held");
        let hint = row.querySelector(".hint");
        if (!hint) {
          hint = el("span", "hint");
          row.querySelector(".lab").append(hint);
          row.classList.add("has-hint");
        }
        hint.prepend(mark);
      }
      // Before the inputs ("2 held · 12 open · 8 occupied") when the figure has them.
      const text = mark.nextSibling ? `${n} held · ` : `${n} held`;
      if (mark.textContent !== text) mark.textContent = text;
      mark.title = `${n} ${pairName(pair)} held for accepted mutual aid offers (not counted as free)`;
    }
    const rest = [...held].filter(([pair]) => !placed.has(pair)).map(([pair, n]) => `${n} ${pairName(pair)} held`);
    let foot = tile.querySelector(".foot .held");
    if (!rest.length) {
      if (foot) foot.remove();
      return;
    }
    if (!foot) {
      foot = el("span", "held");
      tile.querySelector(".foot").append(foot);
    }
    foot.textContent = ` · ${rest.join(", ")}`;
  }

  // A capacity pair in words: "Adult critical care beds" for beds.cc_adult (its open metric's label, less "open").
  function pairName(pair) {
    const open = `${pair}.open`;
    return state.catalogue.has(open) ? label(open).replace(/ open$/, "") : pair;
  }

  function paintFresh(tile, p) {
    // Figures are as old as the hour they describe, whenever they arrived: both are said.
    $(".fresh", tile).textContent = p.period ? `for ${when(p.period)} (${periodAge(p.period)}) · sent ${when(p.received_at)}` : "no report yet";
    const said = $(".said", tile);
    // A site's narrative is that hospital's, not the trust's: it says whose.
    const text = p.narrative ? ` · ${p.said ? `${siteName(tileProvider(tile), p.said)}: ` : ""}“${p.narrative}”` : "";
    if (said.textContent !== text) said.textContent = text;
    if (p.stale) $(".stale-badge", tile).textContent = `STALE · ${p.period ? periodAge(p.period) : "no report"}`;
  }

  const tileProvider = (tile) => tile.id.slice("tile-".length);

  // ---- the site breakdown --------------------------------------------------------------------------------------

  // The figure a provider's site lines show: the first of its tile's key figures that one of its sites reports (for
  // a derived figure, one of its inputs), so that every line shows the same figure and the lines can be compared.
  function siteFigure(kind, sites) {
    for (const metric of state.figures[kind] || state.totals) {
      const m = state.catalogue.get(metric);
      const parts = m && m.inputs ? m.inputs : [metric];
      for (const s of sites.values()) if (parts.some((c) => s.readings.has(c))) return metric;
    }
    return null;
  }

  // A site's value of `metric` from its own readings: reported, or for a derived figure worked out from its inputs
  // as the aggregator does (a ratio is a percentage of a denominator above zero). Not a number: none.
  function siteValue(metric, readings) {
    const m = state.catalogue.get(metric);
    if (!m || !m.inputs) return readings.get(metric);
    const [a, b] = m.inputs.map((c) => readings.get(c));
    if (typeof a !== "number" || typeof b !== "number") return null;
    if (m.formula === "ratio") return b > 0 ? (100 * a) / b : null;
    return a - b;
  }

  // What a site's value of `metric` is, in a word or two after the number: "5 free", "88% occupancy" (what tells a
  // derived figure from its inputs), or the label of a reported one ("3 patients in ED over 12 hours").
  function figureWord(metric) {
    const m = state.catalogue.get(metric);
    if (!m) return "";
    if (m.word === undefined) {
      const l = m.label;
      m.word = m.inputs ? inputWords([metric, ...m.inputs])[0] : /^[A-Z][A-Z]/.test(l) ? l : l.charAt(0).toLowerCase() + l.slice(1);
    }
    return m.word;
  }

  function setText(node, text, flash) {
    if (node.textContent === text) return;
    node.textContent = text;
    if (flash) {
      node.classList.add("flash");
      stats.flashes += 1;
      const anim = node.animate(FLASH, { duration: 1200, easing: "ease-out" });
      anim.onfinish = () => node.classList.remove("flash");
    }
  }

  // A line for each of the provider's sites once it reports by site: the directory's sites in its order (one that
  // has not reported says so, as the provider's figures then stand on the others alone), then any other that
  // reported. The provider's own reports as a whole are not a line: where a site reports a metric, they no longer
  // count in the provider's figure. A site whose report is for an earlier hour than the provider's latest says how
  // old it is.
  function paintSites(tile, provider, p, flash) {
    const box = $(".sites", tile);
    if (!p.sites.size && box.hidden) return;
    const entry = state.directory.providers.find((x) => x.code === provider);
    const codes = p.sites.size ? [...new Set([...((entry && entry.sites) || []).map((s) => s.code), ...p.sites.keys()])] : [];
    const metric = siteFigure(entry ? entry.kind : "", p.sites);
    const word = metric ? figureWord(metric) : "";
    const m = metric && state.catalogue.get(metric);
    const shown = codes.length > MOST_SITE_LINES ? codes.slice(0, MOST_SITE_LINES - 1) : codes;
    const lines = [];
    for (const site of shown) {
      let line = box.querySelector(`.site[data-site="${CSS.escape(site)}"]`);
      if (!line) {
        line = el("div", "site");
        line.dataset.site = site;
        line.append(el("span", "site-name", siteName(provider, site)), el("span", "sv"), el("span", "word"), el("span", "site-age"), el("span", "parts"));
      }
      const s = p.sites.get(site);
      line.classList.toggle("none", !s);
      const [value, unit, older, parts] = [...line.children].slice(1);
      if (!s) {
        setText(value, "–", false);
        unit.textContent = "no report";
        older.textContent = "";
        parts.textContent = "";
        line.title = `${siteName(provider, site)}: no report yet`;
      } else {
        setText(value, metric ? fmt(metric, siteValue(metric, s.readings)) : "–", flash);
        unit.textContent = word;
        older.textContent = s.period < p.period ? periodAge(s.period) : "";
        // A derived figure's inputs, as the tile's figure shows its own: "20 open · 15 occupied".
        const inputs = m && m.inputs ? m.inputs.map((c, i) => `${fmt(c, s.readings.get(c))} ${m.words[i]}`) : [];
        parts.textContent = inputs.length ? `· ${inputs.join(" · ")}` : "";
        line.title = `${siteName(provider, site)}: ${metric ? label(metric) : "no key figure"} for ${when(s.period)}, sent ${when(s.received_at)}`;
      }
      lines.push(line);
    }
    if (shown.length < codes.length) {
      const more = codes.length - shown.length;
      const line = el("div", "site more", `and ${more} more sites`);
      line.title = codes.slice(shown.length).map((c) => siteName(provider, c)).join(", ");
      lines.push(line);
    }
    if (lines.length !== box.children.length || lines.some((l, i) => box.children[i] !== l)) box.replaceChildren(...lines);
    box.hidden = !lines.length;
    // The grid makes room for the longest breakdown on the page.
    const count = String(lines.length);
    if ((tile.dataset.sites || "0") !== count) {
      tile.dataset.sites = count;
      scheduleFit();
    }
  }

  let fitDue = false;
  function scheduleFit() {
    if (fitDue) return;
    fitDue = true;
    requestAnimationFrame(() => {
      fitDue = false;
      fit();
    });
  }

  function paintRollup(key, flash) {
    const r = state.rollups.get(key);
    const card = document.getElementById(totalId(key));
    if (!r || !card) return;
    paintCells(card, r.figures, state.previous.rollups[key], flash);
    const opel = r.figures.get("opel.level");
    paintOpel(card, { declared: opel ? opel.value : null });
    paintCritcon(card, r.critcon);
    frame(card, worstOf(r.figures));
    $(".cover", card).textContent = `${r.reporting}/${r.providers} reporting${r.stale ? ` · ${r.stale} stale` : ""}`;
    paintStrain(key);
    for (const c of card.querySelectorAll(".coverage")) {
      const metric = c.dataset.cover;
      const f = r.figures.get(metric);
      const m = state.catalogue.get(metric);
      const n = f ? f.n || 0 : 0;
      // Derived: partial when a provider reported one of its inputs but not both, so it is out of the figure.
      const most = m && m.inputs ? Math.max(n, ...m.inputs.map((i) => (r.figures.get(i) || { n: 0 }).n || 0)) : n;
      const partial = n < most;
      const text = `${partial ? "PARTIAL " : ""}${n}/${r.providers} providers`;
      if (c.textContent !== text) {
        c.textContent = text;
        c.className = partial ? "coverage partial" : "coverage";
        c.title = partial
          ? `counts ${n} providers; ${most - n} more reported only part of what it is made of and are left out`
          : `counts ${n} of the ${r.providers} providers in this scope`;
      }
      // Beside a derived total, what it stands on: its inputs summed over exactly the providers it counts (the
      // rollup carries them), so "13 free" reads "62 open · 49 occupied", not the 102 open of every provider. A
      // rollup without them (an older aggregator) hides the inputs of a partial figure rather than mislead.
      const inputs = c.parentElement.querySelector(".inputs");
      if (!inputs) continue;
      if (f && f.inputs) {
        inputs.querySelectorAll(".cell.sub").forEach((cell, i) => {
          const text = fmt(m.inputs[i], f.inputs[i]);
          if (cell.textContent !== text) cell.textContent = text;
        });
      }
      const hide = partial && !(f && f.inputs);
      inputs.hidden = hide;
      if (inputs.nextSibling && inputs.nextSibling.nodeType === Node.TEXT_NODE) inputs.nextSibling.textContent = hide ? "" : " · ";
    }
  }

  // A scope's mutual aid strain: its providers' open requests (counted from the panel's, which follow the stream)
  // and the share of its closed requests that went unmet (the aggregator's measure), each only when not zero.
  function paintStrain(key) {
    const card = document.getElementById(totalId(key));
    const mark = card && card.querySelector(".strain");
    if (!mark) return;
    const [level, code] = key.split(":");
    let open = 0;
    for (const c of state.aid.values()) if (inScopeOf(c.request.ask.provider, level, code)) open += 1;
    const r = state.rollups.get(key);
    const rate = r && r.strain ? r.strain.unfulfilled_rate : null;
    const parts = [];
    if (open) parts.push(`${open} open request${open === 1 ? "" : "s"}`);
    if (rate) parts.push(`${Math.round(rate * 100)}% unfulfilled`);
    const text = parts.length ? `${card.classList.contains("system-total") ? " · " : ""}${parts.join(" · ")}` : "";
    if (mark.textContent !== text) mark.textContent = text;
    mark.hidden = !text;
    mark.title = "mutual aid: requests not yet closed, and the share of closed requests that went unmet";
  }

  // Whether a provider is in the scope `level:code`.
  function inScopeOf(provider, level, code) {
    if (level === "nation") return true;
    const p = state.directory.providers.find((x) => x.code === provider);
    if (!p) return false;
    if (level === "system") return p.system === code;
    const s = state.directory.systems.find((x) => x.code === p.system);
    return !!s && s.region === code;
  }

  function refreshAges() {
    paintAid();
    for (const [code, p] of state.providers) {
      const tile = document.getElementById(`tile-${code}`);
      if (!tile) continue;
      paintFresh(tile, p);
      paintSites(tile, code, p, false);
    }
    const cutoff = now() - HOUR;
    const kept = state.changes.filter((c) => c.at >= cutoff);
    if (kept.length !== state.changes.length) {
      state.changes = kept;
      schedulePanels();
    }
  }

  // ---- the side panels -----------------------------------------------------------------------------------------

  // The panels summarise every provider: redraw them at most once a frame, however many events arrive.
  // The panels are redrawn at most every quarter of a second, however many events arrive (a panel a moment late
  // costs nothing on a wall; redrawing it with every event of a busy system would cost every frame).
  let panelsDue = false;
  let alertsDue = false;
  function schedulePanels(alerts) {
    alertsDue = alertsDue || !!alerts;
    if (panelsDue) return;
    panelsDue = true;
    setTimeout(() => {
      requestAnimationFrame(() => {
        panelsDue = false;
        if (alertsDue) paintAlerts();
        alertsDue = false;
        paintChanges();
      });
    }, 250);
  }

  function providerName(code) {
    const p = state.directory.providers.find((x) => x.code === code);
    return p ? shortName(p.name) : code;
  }

  // Every open alert of the scope is listed; those that do not fit are on the panel's next pages, which turn with
  // the tiles', so the count in the title is what can be read here.
  function paintAlerts() {
    const alerts = [];
    for (const p of state.providers.values()) for (const a of p.alerts.values()) alerts.push(a);
    alerts.sort((a, b) => (a.severity === b.severity ? b.raised_at - a.raised_at : a.severity === "critical" ? -1 : 1));
    const list = $("#alerts");
    const items = alerts.map((a) => {
      const item = el("li", a.severity);
      item.dataset.key = a.key;
      item.append(
        el("span", "when", when(a.raised_at)),
        el("span", "sev", a.severity === "critical" ? "Critical" : "Warning"),
        el("span", "who", providerName(a.provider)),
        document.createTextNode(humanise(a.message, a.provider)),
      );
      return item;
    });
    if (!items.length) items.push(el("li", "empty", "No open alerts"));
    list.replaceChildren(...items);
    // Pages: every item is the same height (two lines), so a page holds as many as fit, in order, and only one
    // item is measured.
    const height = list.clientHeight;
    const each = items[0].offsetHeight || 1;
    const perPage = Math.max(1, Math.floor(height / each));
    items.forEach((item, i) => (item.dataset.page = String(Math.floor(i / perPage))));
    state.alertPages = Math.max(1, Math.ceil(alerts.length / perPage));
    state.alertCount = alerts.length;
    if (state.alertPage >= state.alertPages) state.alertPage = 0;
    showAlertPage();
  }

  function showAlertPage() {
    const items = $("#alerts").children;
    let first = 0;
    let shown = 0;
    for (const item of items) {
      const on = item.dataset.page === String(state.alertPage);
      item.hidden = !on;
      if (on && item.dataset.key) shown += 1;
      else if (!on && Number(item.dataset.page) < state.alertPage) first += 1;
    }
    const n = state.alertCount || 0;
    let title = `${n} open alert${n === 1 ? "" : "s"}`;
    if (state.alertPages > 1) title += ` · ${first + 1}–${first + shown} (page ${state.alertPage + 1} of ${state.alertPages})`;
    $("#alerts-title").textContent = title;
  }

  // ---- mutual aid ----------------------------------------------------------------------------------------------

  const CLOSED = new Set(["completed", "cancelled", "expired", "unfulfilled"]);
  const URGENCY = { immediate: 3, urgent: 2, routine: 1 };

  // When an open request escalates next ("to system in 18 min"), or how far it has ("escalated to region"). The
  // timers count from its creation while it is open with no offer pending (docs/MUTUAL-AID.md).
  function aidTimer(r) {
    const t = state.aidTimers;
    if (r.escalated === "region") return { text: "escalated to region", late: true };
    const done = r.escalated ? `escalated to ${r.escalated}` : "";
    if (r.state !== "open" || !t) return done ? { text: done, late: true } : null;
    const [level, after] = r.escalated === "system" ? ["region", t.region_after_ms] : ["system", t.system_after_ms];
    const left = Math.ceil((r.created_at + after - now()) / 60000);
    const next = left > 0 ? `to ${level} in ${left} min` : `escalating to ${level}`;
    return { text: done ? `${done} · ${next}` : next, late: !!done || left <= 0 };
  }

  function paintAid() {
    const list = $("#aid");
    if (!list || !state.directory) return;
    const cases = [...state.aid.values()].filter((c) => {
      const p = state.directory.providers.find((x) => x.code === c.request.ask.provider);
      return !p || inScope(p);
    });
    cases.sort((a, b) => (URGENCY[b.request.ask.urgency] || 0) - (URGENCY[a.request.ask.urgency] || 0) || a.request.created_at - b.request.created_at);
    const items = cases.map(({ request: r, offers }) => {
      const item = el("li", `aid-request urgency-${r.ask.urgency}`);
      item.dataset.request = r.id;
      const offered = offers.filter((o) => o.state === "proposed" || o.state === "accepted").reduce((n, o) => n + o.quantity, 0);
      item.append(
        el("span", "when", age(r.created_at)),
        el("span", "who", providerName(r.ask.provider)),
        document.createTextNode(`${r.ask.quantity} × ${pairName(r.ask.pair)} · `),
        el("span", "urgency", r.ask.urgency),
        document.createTextNode(` · ${r.state.replace(/_/g, " ")}${offered ? ` (${offered} offered)` : ""}`),
      );
      const timer = aidTimer(r);
      if (timer) item.append(document.createTextNode(" · "), el("span", timer.late ? "timer late" : "timer", timer.text));
      item.title = `${r.id} ${r.ask.reference}${r.ask.summary ? `: ${r.ask.summary}` : ""}`;
      return item;
    });
    if (!items.length) items.push(el("li", "empty", "No open requests"));
    list.replaceChildren(...items);
    const n = cases.length;
    $("#aid-title").textContent = n ? `Mutual aid · ${n} open request${n === 1 ? "" : "s"}` : "Mutual aid";
  }

  // Every open request the wall can see, and the timers: on start and after every (re)connect's snapshot.
  async function loadAid() {
    try {
      const r = await fetch("api/v1/aid/requests?open=true");
      if (!r.ok) throw new Error(`${r.status}`);
      const body = await r.json();
      state.aidTimers = body.timers || null;
      state.aid.clear();
      for (const c of body.requests || []) if (!CLOSED.has(c.request.state)) state.aid.set(c.request.id, c);
      paintAid();
      for (const key of state.rollups.keys()) paintStrain(key);
    } catch (err) {
      console.warn("sitrep: mutual aid requests unavailable", err);
    }
  }

  // A request closed: the unfulfilled rates of the wall's scopes are looked up again (a moment later, once for
  // however many closed together).
  let strainDue = null;
  function scheduleStrain() {
    clearTimeout(strainDue);
    strainDue = setTimeout(async () => {
      for (const [key, r] of state.rollups) {
        if (!document.getElementById(totalId(key))) continue;
        try {
          const m = await fetch(`api/v1/aid/measures?scope=${encodeURIComponent(key)}`);
          if (!m.ok) continue;
          const body = await m.json();
          r.strain = { open_requests: body.open_requests, unfulfilled_rate: body.unfulfilled_rate };
          paintStrain(key);
        } catch (err) {
          console.warn("sitrep: mutual aid measures unavailable", err);
        }
      }
    }, 1000);
  }

  // An `aid` event: the book's (requests and offers as they are after an action) or a holding provider's (its
  // holds, and the figures and totals they moved).
  function onAid(e) {
    const a = e.aid || {};
    for (const r of a.requests || []) {
      if (CLOSED.has(r.state)) {
        state.aid.delete(r.id);
        if (r.state !== "cancelled") scheduleStrain();
      } else {
        state.aid.set(r.id, { request: r, offers: (a.offers || []).filter((o) => o.request === r.id) });
      }
    }
    const p = state.providers.get(e.provider);
    if (a.holds && p) {
      p.holds = a.holds;
      applyFigures(p, e);
      applyRollups(e);
      paintProvider(e.provider, true);
    }
    paintAid();
    for (const key of state.rollups.keys()) paintStrain(key);
    schedulePanels((e.raised && e.raised.length) || (e.cleared && e.cleared.length));
  }

  // What changed, worded for people: the provider's key figures first (and what they are made of), then how many
  // other figures changed.
  function changeParts(provider, changes) {
    const p = state.directory.providers.find((x) => x.code === provider);
    const keys = new Set();
    for (const code of (p && state.figures[p.kind]) || state.totals) {
      keys.add(code);
      const m = state.catalogue.get(code);
      if (m && m.inputs) m.inputs.forEach((i) => keys.add(i));
    }
    keys.add("opel.level");
    const shown = changes.filter((c) => keys.has(c.metric));
    return { shown, others: changes.length - shown.length };
  }

  function noteChange(change) {
    if (state.changes.some((c) => c.key === change.key)) return;
    state.changes.push(change);
    state.changes.sort((a, b) => b.at - a.at);
    if (state.changes.length > 300) state.changes.length = 300;
  }

  function paintChanges() {
    const list = $("#changes");
    const cutoff = now() - HOUR;
    const items = [];
    for (const c of state.changes) {
      if (c.at < cutoff) continue;
      const item = el("li");
      item.append(el("span", "when", when(c.at)), el("span", "who", providerName(c.provider)));
      // A site's report changed that site's values, not the provider's: the values are said to be the site's. So are
      // those of a report as a whole from a provider that reports by site, which count only where no site reports.
      const p = state.providers.get(c.provider);
      if (c.site) item.append(el("span", "where", `${siteName(c.provider, c.site)}: `));
      else if (p && p.sites.size && (c.changes.length || c.narrative)) item.append(el("span", "where", "as a whole: "));
      if (c.note) item.append(document.createTextNode(c.note));
      const { shown, others } = changeParts(c.provider, c.changes || []);
      shown.forEach((ch, i) => {
        if (i > 0 || c.note) item.append(document.createTextNode("; "));
        item.append(document.createTextNode(`${label(ch.metric)} ${fmt(ch.metric, ch.before)} `));
        const up = typeof ch.before === "number" && typeof ch.after === "number" ? Math.sign(ch.after - ch.before) : 0;
        const worse = worseWay(ch.metric);
        const arrow = el("span", up && worse ? `${up > 0 ? "up" : "down"} ${up === worse ? "bad" : "good"}` : "", "→");
        item.append(arrow, document.createTextNode(` ${fmt(ch.metric, ch.after)}`));
      });
      if (others > 0) item.append(document.createTextNode(`${shown.length || c.note ? "; " : ""}${others} other figure${others === 1 ? "" : "s"} updated`));
      if (c.narrative) item.append(document.createTextNode(" "), el("span", "said", `“${c.narrative}”`));
      items.push(item);
      if (items.length >= 30) break;
    }
    if (!items.length) items.push(el("li", "empty", "No changes in the last hour"));
    list.replaceChildren(...items);
  }

  // ---- the stream ----------------------------------------------------------------------------------------------

  function figuresOf(list) {
    const m = new Map();
    for (const f of list || []) m.set(f.metric, { value: f.value, rag: f.rag || null, n: f.n });
    return m;
  }

  // A provider's sites from a snapshot. The entry of its reports as a whole (`site: null`) is left out: the tile
  // does not show it (see paintSites), and events do not say which of its readings still count.
  function sitesOf(list) {
    const m = new Map();
    for (const s of list || []) {
      if (!s.site) continue;
      m.set(s.site, { period: s.period, revision: s.revision, received_at: s.received_at, readings: new Map(Object.entries(s.readings || {})) });
    }
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
    if (s.server_time) state.serverOffset = s.server_time - Date.now();
    for (const p of s.providers) {
      state.providers.set(p.provider, {
        period: p.period,
        received_at: p.received_at,
        stale: p.stale,
        narrative: p.narrative || null,
        said: p.site || null,
        figures: figuresOf(p.figures),
        opel: p.opel,
        alerts: new Map(p.alerts.map((a) => [a.key, a])),
        sites: sitesOf(p.sites),
        holds: p.holds || [],
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
    schedulePanels(true);
    loadAid();
    stats.snapshots += 1;
  }

  // An event's new figures of its provider ([index, value, rag], by the event's metrics) and its alerts.
  function applyFigures(p, e) {
    for (const [i, value, rag] of e.figures || []) {
      if (value === null || value === undefined) p.figures.delete(e.metrics[i]);
      else p.figures.set(e.metrics[i], { value, rag: rag || null });
    }
    for (const key of e.cleared || []) p.alerts.delete(key);
    for (const a of e.raised || []) p.alerts.set(a.key, a);
  }

  // An event's totals: arrays aligned with its metrics.
  function applyRollups(e) {
    for (const r of e.rollups || []) {
      updateRollup(r, e.metrics.map((metric, i) => ({ metric, value: r.value[i], rag: r.rag[i], n: r.n[i], inputs: r.inputs ? r.inputs[i] : null })));
    }
  }

  function onEvent(e) {
    if (e.kind === "aid") return onAid(e);
    let p = state.providers.get(e.provider);
    // What the report changed: its site's own values where it has a site, else the provider's.
    const changes = (e.changes || []).map(([i, before, after]) => ({ metric: e.metrics[i], before, after }));
    if (e.live || e.kind === "stale") {
      if (!p) {
        p = { period: e.period, received_at: e.received_at, stale: false, narrative: null, said: null, figures: new Map(), opel: null, alerts: new Map(), sites: new Map(), holds: [] };
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
        // A site may send its report for an hour the provider has already had from another site: the provider is
        // as fresh as its latest.
        p.period = Math.max(p.period, e.period);
        p.received_at = e.received_at;
        if (e.narrative !== undefined) {
          p.narrative = e.narrative;
          p.said = e.site || null;
        }
        // The provider's figures come from `figures` alone, also for a site's report (they are the rollup of its
        // sites); a site's `changes` are that site's values, kept with the site.
        // An event names its metrics once; figures are [index, value, rag] and rollups arrays aligned with them.
        applyFigures(p, e);
        if (e.opel) p.opel = e.opel;
        // A report that shows held beds occupied ends their holds.
        if (e.aid && e.aid.holds) p.holds = e.aid.holds;
        if (e.site) {
          const s = p.sites.get(e.site) || { readings: new Map() };
          s.period = e.period;
          s.revision = e.revision;
          s.received_at = e.received_at;
          for (const c of changes) s.readings.set(c.metric, c.after);
          p.sites.set(e.site, s);
        }
      }
      if (e.kind === "stale") {
        for (const key of e.cleared || []) p.alerts.delete(key);
        for (const a of e.raised || []) p.alerts.set(a.key, a);
      }
      // Stale exactly while its stale alert is open: a report for an hour long past leaves it stale.
      p.stale = p.alerts.has(`stale:${e.provider}`);
      applyRollups(e);
      paintProvider(e.provider, true);
    }
    noteChange({
      key: `${e.provider}/${e.site || ""}/${e.period}/${e.revision}/${e.kind}`,
      at: e.kind === "stale" ? now() : e.received_at,
      provider: e.provider,
      site: e.site || null,
      changes,
      narrative: e.narrative || null,
      note: e.kind === "stale" ? "stopped reporting: stale" : e.live ? "" : `correction for ${when(e.period)}`,
    });
    schedulePanels((e.raised && e.raised.length) || (e.cleared && e.cleared.length));
  }

  // A scope's counts and the figures that changed ({metric, value, rag, n}; no value: it has none now).
  function updateRollup(r, figures) {
    const key = `${r.scope.level}:${r.scope.code}`;
    const known = state.rollups.get(key) || { scope: r.scope, figures: new Map() };
    known.providers = r.providers;
    known.reporting = r.reporting;
    known.stale = r.stale;
    // An event's rollups carry CRITCON only when the event may have changed it.
    if (r.critcon) known.critcon = { ...known.critcon, ...r.critcon };
    for (const f of figures) {
      if (f.value === null || f.value === undefined) known.figures.delete(f.metric);
      else known.figures.set(f.metric, { value: f.value, rag: f.rag || null, n: f.n, inputs: f.inputs || null });
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
      state.opened = true;
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
    const retry = async () => {
      source.close();
      if (state.source !== source) return;
      state.source = null;
      // A stream may have been refused (a bad address, or a sign-in that ended): ask the API why, and say so rather
      // than retrying forever. Anything else (the aggregator away, a restart) is retried.
      if (await refused()) return;
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

  // A screen that is not (or no longer) signed in says so, rather than showing an empty board, and looks again
  // now and then, so a screen signed in meanwhile comes back by itself.
  function signedOut() {
    showNotice(
      "Signed out",
      [
        "This screen is not signed in to sitrep, so it shows no figures.",
        "Open this screen's sign-in link (ask your sitrep administrator), or sign in again if its session has ended.",
      ],
    );
    $("#scope-name").textContent = "signed out";
    setLink("stopped", "signed out");
    setTimeout(async () => {
      try {
        if ((await fetch("api/v1/directory")).ok) location.reload();
        else signedOut();
      } catch (err) {
        signedOut();
      }
    }, 30000);
  }

  async function refused() {
    try {
      const r = await fetch(`api/v1/alerts?${scopeQuery}`);
      if (r.status === 401) {
        signedOut();
        return true;
      }
      if (r.status !== 400) return false;
      const body = await r.json();
      const why = [body.error, ...(body.violations || []).map((v) => `${v.field}: ${v.description}`)].filter(Boolean);
      showNotice("This wallboard's address is not valid", why, "Correct the address (the part after “?”) and reload the page.");
      return true;
    } catch (err) {
      return false;
    }
  }

  // ---- history: the previous hour's figures, and what changed in the last hour ---------------------------------

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
    const t = now();
    const nextHour = Math.ceil((t + 1) / HOUR) * HOUR;
    setTimeout(loadPrevious, nextHour - t + 15000);
  }

  async function loadLastHour() {
    try {
      const r = await fetch(`api/v1/changes?${[scopeQuery, "limit=300"].filter(Boolean).join("&")}`);
      if (!r.ok) throw new Error(`${r.status}`);
      const body = await r.json();
      for (const c of body.changes) {
        noteChange({
          key: `${c.provider}/${c.site || ""}/${c.period}/${c.revision}/report`,
          at: c.received_at,
          provider: c.provider,
          site: c.site || null,
          changes: c.changes.map(([metric, before, after]) => ({ metric, before, after })),
          narrative: c.narrative || null,
          note: "",
        });
      }
      schedulePanels();
    } catch (err) {
      console.warn("sitrep: the last hour's changes are unavailable", err);
    }
  }

  function tick() {
    const parts = zoneFormat.formatToParts(now());
    const part = (type) => (parts.find((p) => p.type === type) || { value: "" }).value;
    $("#clock").replaceChildren(document.createTextNode(`${part("hour")}:${part("minute")}:${part("second")}`), el("span", "zone", part("timeZoneName")));
  }

  async function start() {
    tick();
    setInterval(tick, 1000);
    setInterval(refreshAges, 15000);
    for (;;) {
      try {
        const [d, c] = await Promise.all([fetch("api/v1/directory"), fetch("api/v1/catalogue")]);
        if (d.status === 401 || c.status === 401) return signedOut();
        if (!d.ok || !c.ok) throw new Error(`directory ${d.status}, catalogue ${c.status}`);
        state.directory = await d.json();
        const catalogue = await c.json();
        for (const m of catalogue.metrics) state.catalogue.set(m.code, m);
        for (const m of catalogue.derived) state.catalogue.set(m.code, m);
        break;
      } catch (err) {
        setLink("reconnecting", "waiting for sitrep");
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
    // Who this screen is signed in as (a kiosk session's name), shown beside its scope.
    fetch("api/v1/whoami")
      .then((r) => (r.ok ? r.json() : null))
      .then((me) => {
        if (me && me.name !== "anonymous") $("#who").textContent = `· signed in as ${me.name}`;
      })
      .catch(() => {});
    for (const m of state.catalogue.values()) if (m.inputs) m.words = inputWords(m.inputs);
    for (const p of state.directory.providers) {
      for (const s of p.sites || []) state.siteNames.set(`${p.code}/${s.code}`, shortSiteName(s.name));
    }
    const known = (codes, what) =>
      codes.filter((code) => {
        if (state.catalogue.has(code)) return true;
        console.warn(`sitrep: ${what}: ${code} is not in the catalogue`);
        return false;
      });
    state.totals = known(codesParam("totals", deployment.totals) || TOTAL_FIGURES, "totals");
    const kinds = new Set([...Object.keys(KEY_FIGURES), ...state.directory.providers.map((p) => p.kind)]);
    for (const kind of kinds) {
      const configured = (deployment.figures || {})[kind];
      const chosen = known(codesParam(`figures.${kind}`, configured) || KEY_FIGURES[kind] || [], `figures.${kind}`);
      state.figures[kind] = chosen.length ? chosen : state.totals.slice(0, 4);
    }
    const missing = unknownScope();
    if (missing.length) return badScope(missing);
    build();
    let resized = null;
    addEventListener("resize", () => {
      clearTimeout(resized);
      resized = setTimeout(() => {
        fit();
        paintAlerts();
      }, 100);
    });
    setInterval(turnPage, settings.rotateMs);
    connect();
    loadPrevious();
    loadLastHour();
  }

  start();
})();

// The operator's dashboard of `posestream run --http`: live tiles, the event list, the clip
// player and the per-stage latency chart. Plain JavaScript, no library, nothing fetched from
// elsewhere. Every piece of data (stream names, labels, errors) goes into the page as text
// (textContent, attribute values), never as HTML; stream names in URLs are percent-encoded.
"use strict";

const POLL_STATUS_MS = 1500;
const POLL_EVENTS_MS = 1500;
const POLL_LATENCY_MS = 5000;
const EVENTS_PAGE = 50;
// Browsers keep at most 6 connections per server, and an MJPEG stream holds one for good: past
// this many streams the tiles refresh a still JPEG instead, so the polls still get through.
const MAX_MJPEG_TILES = 4;
const JPEG_REFRESH_MS = 500;
// the stages in the order a frame meets them (as `posestream bench` lists them)
const STAGES = ["read", "detect", "pose", "track", "window", "rasterize", "classify", "frame", "frame_to_label"];
// colours told apart also without colour vision: each has its own dash pattern
const COLORS = ["#1b6ac9", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#00838f", "#5d4037", "#111111", "#c2185b"];
const DASHES = ["", "7 3", "2 3", "10 3 2 3", "", "7 3", "2 3", "", "10 3 2 3"];

const token = new URLSearchParams(location.search).get("token");

// A same-server URL; media (img, video) carry the token in the query, as they cannot send a header.
function url(path, params) {
  const q = new URLSearchParams(params || {});
  if (token) q.set("token", token);
  const s = q.toString();
  return s ? path + (path.includes("?") ? "&" : "?") + s : path;
}

async function api(path, options) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { cache: "no-store", ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error || response.status + " " + response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

// el("td", {class: "x"}, "text", otherNode): an element; strings become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function $(id) { return document.getElementById(id); }

function fmtTime(ts) {
  if (typeof ts !== "number") return "?";
  const d = new Date(ts * 1000);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function fmtNum(v, digits) { return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "–"; }

function fmtDuration(s) {
  if (typeof s !== "number") return "?";
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

// Repeats fn every ms milliseconds, each time only after the previous call settled.
function every(ms, fn) {
  const tick = async () => {
    try { await fn(); } catch (e) { console.warn(e); }
    setTimeout(tick, ms);
  };
  tick();
}

// ------------------------------------------------------------------------------------------
// Streams: one tile per stream, the annotated preview plus its health

const tiles = new Map();  // stream name -> {li, img, fields}
let streamNames = [];

function tileFor(name, useMjpeg) {
  let tile = tiles.get(name);
  if (tile) return tile;
  const heading = el("h3", {}, name);
  const img = el("img", { alt: "Live view of stream " + name + " with skeletons, track ids and labels",
                          width: 640, height: 480 });
  const fields = {};
  const dl = el("dl", { class: "health" });
  for (const [key, label] of [["health", "Health"], ["source", "Source"], ["fps", "Frames/s"], ["tracks", "People"],
                              ["frames", "Frames processed"], ["dropped", "Frames dropped"], ["error", "Last error"]]) {
    fields[key] = el("dd");
    dl.append(el("dt", {}, label), fields[key]);
  }
  const li = el("li", { class: "tile" }, heading, img, dl);
  tile = { li, img, fields, name, mjpeg: useMjpeg, retry: null };
  const previewPath = "/preview/" + encodeURIComponent(name);
  const load = () => {
    img.src = tile.mjpeg ? url(previewPath + ".mjpg", { t: Date.now() }) : url(previewPath + ".jpg", { t: Date.now() });
  };
  // No frame yet (404) or the stream broke off: try again shortly.
  img.addEventListener("error", () => {
    clearTimeout(tile.retry);
    tile.retry = setTimeout(load, 2000);
  });
  if (!useMjpeg) {
    img.addEventListener("load", () => { clearTimeout(tile.retry); tile.retry = setTimeout(load, JPEG_REFRESH_MS); });
  }
  load();
  tiles.set(name, tile);
  $("tiles").append(li);
  return tile;
}

function streamList(status) {
  const s = status.streams;
  if (Array.isArray(s)) return s.map(x => (x && typeof x === "object") ? x : { stream: String(x) });
  if (s && typeof s === "object") return Object.entries(s).map(([k, v]) => ({ stream: k, ...(v || {}) }));
  return [];
}

async function pollStatus() {
  let status;
  try {
    status = await api("/status");
  } catch (e) {
    $("run-summary").textContent = "Cannot reach the run: " + e.message;
    $("run-summary").className = "bad";
    return;
  }
  const streams = streamList(status);
  const names = streams.map(s => String(s.stream ?? s.name));
  const useMjpeg = names.length <= MAX_MJPEG_TILES;
  for (const s of streams) {
    const name = String(s.stream ?? s.name);
    const t = tileFor(name, useMjpeg);
    const src = s.source || {};
    const f = t.fields;
    f.health.textContent = s.health ?? "?";
    f.health.className = s.health === "ok" ? "ok" : "bad";
    f.source.textContent = src.health ?? "?";
    f.fps.textContent = fmtNum(s.fps, 1);
    f.tracks.textContent = s.tracks ?? "?";
    f.frames.textContent = s.frames_processed ?? "?";
    f.dropped.textContent = src.frames_dropped ?? 0;
    f.error.textContent = s.last_error || src.last_error || "none";
  }
  for (const [name, t] of tiles) {
    if (!names.includes(name)) { clearTimeout(t.retry); t.img.removeAttribute("src"); t.li.remove(); tiles.delete(name); }
  }
  $("no-streams").hidden = names.length > 0;
  const health = status.health ?? "?";
  $("run-summary").textContent = "Health " + health + " · up " + fmtDuration(status.uptime_s) + " · " +
    names.length + (names.length === 1 ? " stream" : " streams") + " · " + (status.events ?? 0) +
    (status.events === 1 ? " event" : " events") + " this run";
  $("run-summary").className = health === "ok" ? "ok" : "bad";
  if (names.join("\n") !== streamNames.join("\n")) {
    streamNames = names;
    const select = $("latency-stream");
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "all" }, "all streams"),
                           ...names.map(n => el("option", { value: n }, n)));
    select.value = names.includes(chosen) ? chosen : "all";
  }
}

// ------------------------------------------------------------------------------------------
// Events: newest first, kept in place between polls (so keyboard focus stays where it is)

const rows = new Map();  // event id -> {tr, cells, event}
let firstEventsPoll = true;
let olderBefore = null;  // `before` of the next older page, once the operator asked for older ones
let pagedOlder = false;

function eventCaption(e) {
  return "event " + e.id + ": " + (e.label ?? "?") + " on " + e.stream + ", track " + e.track_id;
}

function buildRow(e) {
  const cells = {
    time: el("td"), stream: el("td"), track: el("td"), label: el("td"), score: el("td", { class: "num" }),
    snapshot: el("td"), clip: el("td"), ack: el("td"),
  };
  const tr = el("tr", { "data-event-id": e.id }, ...Object.values(cells));
  const playButton = el("button", { type: "button", class: "play" }, "Play clip");
  playButton.addEventListener("click", () => play(rows.get(e.id).event, playButton));
  const ackButton = el("button", { type: "button", class: "ack" }, "Acknowledge");
  ackButton.addEventListener("click", () => acknowledge(e.id));
  const row = { tr, cells, event: e, playButton, ackButton, shown: {} };
  cells.time.append(el("time", { datetime: new Date((e.start_ts ?? e.created_ts) * 1000).toISOString() },
                       fmtTime(e.start_ts ?? e.created_ts)));
  cells.stream.textContent = e.stream;
  cells.track.textContent = e.track_id ?? "scene";
  cells.label.textContent = e.label ?? e.kind ?? "?";
  cells.score.textContent = fmtNum(e.score, 2);
  cells.ack.append(ackButton);
  updateRow(row, e);
  return row;
}

function updateRow(row, e) {
  row.event = e;
  const ev = e.evidence || {};
  // the snapshot and the clip appear once the evidence writer has them
  if (ev.snapshot && row.shown.snapshot !== ev.snapshot) {
    row.shown.snapshot = ev.snapshot;
    row.cells.snapshot.replaceChildren(el("img", { src: url(ev.snapshot), alt: "Snapshot of " + eventCaption(e),
                                                   width: 112, height: 84, loading: "lazy" }));
  } else if (!ev.snapshot) {
    row.cells.snapshot.textContent = ev.state === "pending" ? "being written" : "none (" + (ev.state ?? "?") + ")";
  }
  if (ev.clip) {
    if (row.shown.clip !== ev.clip) {
      row.shown.clip = ev.clip;
      row.playButton.setAttribute("aria-label", "Play the clip of " + eventCaption(e));
      row.cells.clip.replaceChildren(row.playButton, el("span", { class: "meta" }, fmtNum(ev.clip_s, 1) + " s"));
    }
  } else {
    row.cells.clip.textContent = ev.state === "pending" ? "being written" : "none (" + (ev.state ?? "?") + ")";
  }
  if (e.acked && !row.shown.acked) {
    row.shown.acked = true;
    // the button stays (and keeps the focus if it has it), but is done
    row.ackButton.textContent = "Acknowledged";
    row.ackButton.setAttribute("aria-disabled", "true");
    row.ackButton.title = e.acked_ts ? "acknowledged " + fmtTime(e.acked_ts) : "acknowledged";
    row.tr.classList.add("acked");
  }
  if (!e.acked) row.ackButton.setAttribute("aria-label", "Acknowledge " + eventCaption(e));
  else row.ackButton.setAttribute("aria-label", "Acknowledged: " + eventCaption(e));
}

function placeRows() {
  // newest (highest id) first; append() moves a row only if it is out of place
  const body = $("event-rows");
  const ordered = [...rows.keys()].sort((a, b) => b - a);
  let prev = null;
  for (const id of ordered) {
    const tr = rows.get(id).tr;
    const wanted = prev ? prev.nextSibling : body.firstChild;
    if (tr !== wanted) body.insertBefore(tr, wanted);
    prev = tr;
  }
}

// complete: `events` is the newest page; whole: it is every event the store has
function mergeEvents(events, complete, whole) {
  const fresh = [];
  for (const e of events) {
    const row = rows.get(e.id);
    if (row) updateRow(row, e);
    else { rows.set(e.id, buildRow(e)); fresh.push(e); }
  }
  if (complete) {
    // rows within the range of this page (of the whole store) that it no longer has: deleted by retention
    const ids = new Set(events.map(e => e.id));
    const lowest = whole ? -Infinity : events.length ? Math.min(...events.map(e => e.id)) : Infinity;
    for (const [id, row] of rows) {
      if (!ids.has(id) && id >= lowest) { row.tr.remove(); rows.delete(id); }
    }
  }
  placeRows();
  return fresh;
}

async function pollEvents() {
  let page;
  try {
    page = await api("/api/events?limit=" + EVENTS_PAGE);
  } catch (e) {
    $("events-summary").textContent = e.status === 404 ? "No event store: start the run with --evidence DIR."
      : "Cannot load the events: " + e.message;
    return;
  }
  const fresh = mergeEvents(page.events, true, page.next_before === null || page.next_before === undefined);
  if (!firstEventsPoll && fresh.length) {
    const newest = fresh[0];
    $("event-news").textContent = (fresh.length === 1 ? "New event: " : fresh.length + " new events, the newest: ") +
      (newest.label ?? "?") + " on " + newest.stream + ", track " + newest.track_id;
  }
  firstEventsPoll = false;
  const unacked = [...rows.values()].filter(r => !r.event.acked).length;
  $("events-summary").textContent = page.total === 0 ? "No events yet."
    : "Showing " + rows.size + " of " + page.total + " events, newest first; " + unacked + " shown not acknowledged.";
  if (!pagedOlder) olderBefore = page.next_before;
  $("older").hidden = olderBefore === null || olderBefore === undefined;
}

async function loadOlder() {
  if (olderBefore === null) return;
  pagedOlder = true;
  const page = await api("/api/events?limit=" + EVENTS_PAGE + "&before=" + encodeURIComponent(olderBefore));
  mergeEvents(page.events, false, false);
  olderBefore = page.next_before;
  $("older").hidden = olderBefore === null;
}

async function acknowledge(id) {
  const row = rows.get(id);
  if (!row || row.event.acked) return;
  try {
    const e = await api("/api/events/" + encodeURIComponent(id) + "/ack", { method: "POST" });
    updateRow(row, e);
    $("event-news").textContent = "Acknowledged " + eventCaption(e);
  } catch (err) {
    $("event-news").textContent = "Could not acknowledge event " + id + ": " + err.message;
  }
}

function play(e, button) {
  const ev = e.evidence || {};
  if (!ev.clip) return;
  const video = $("clip");
  $("player").hidden = false;
  $("player-caption").textContent = "Clip of " + eventCaption(e) + ", " + fmtTime(e.start_ts ?? e.created_ts);
  video.src = url(ev.clip);
  video.dataset.eventId = e.id;
  video.play().catch(() => { /* autoplay refused: the controls are there */ });
  video.focus();
  $("player-close").onclick = () => {
    video.pause();
    video.removeAttribute("src");
    video.load();
    $("player").hidden = true;
    if (button && button.isConnected) button.focus();
  };
}

// ------------------------------------------------------------------------------------------
// Latency: a small SVG line chart of the server's per-interval percentiles

const SVG = "http://www.w3.org/2000/svg";
const hiddenStages = new Set();
let lastLatency = null;

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 6, 8, 10]) if (v <= m * p) return m * p;  // quarters of these are round
  return 10 * p;
}

function stageOrder(a, b) {
  const ia = STAGES.indexOf(a), ib = STAGES.indexOf(b);
  return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || (a < b ? -1 : a > b ? 1 : 0);
}

function drawChart(data) {
  const key = $("latency-pct").value;
  const pctName = key === "p50_ms" ? "p50" : "p95";
  const series = (data.series || []).slice().sort((a, b) => stageOrder(a.stage, b.stage));
  const W = 720, H = 260, L = 56, R = 12, T = 12, B = 32;
  // the time axis spans what there is (at least a minute), up to the server's whole history
  let oldest = data.now;
  for (const s of series) if (s.ts.length) oldest = Math.min(oldest, s.ts[0]);
  const span = Math.min(data.keep_s, Math.max(60, data.now - oldest));
  const t1 = data.now, t0 = t1 - span;
  const shown = series.filter(s => !hiddenStages.has(s.stage));
  let top = 0;
  for (const s of shown) for (const v of s[key]) top = Math.max(top, v);
  top = niceMax(top);
  const x = t => L + (t - t0) / (t1 - t0) * (W - L - R);
  const y = v => T + (1 - v / top) * (H - T - B);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title" },
                    svg("title", { id: "chart-title" }, `${pctName} latency per stage over the last ` +
                        `${fmtDuration(span)}, in milliseconds; the table below has the values`));
  for (let i = 0; i <= 4; i++) {
    const v = top * i / 4, yy = y(v);
    chart.append(svg("line", { x1: L, x2: W - R, y1: yy, y2: yy, class: "grid" }),
                 svg("text", { x: L - 6, y: yy + 4, "text-anchor": "end", class: "tick" }, +v.toPrecision(3) + " ms"));
  }
  const step = [10, 15, 30, 60, 120, 300].find(st => span / st <= 6) || 600;
  for (let ago = 0; ago <= span + 0.001; ago += step) {
    const text = ago === 0 ? "now" : span < 180 ? `-${ago} s` : `-${ago / 60} min`;
    chart.append(svg("text", { x: x(t1 - ago), y: H - 10, "text-anchor": "middle", class: "tick" }, text));
  }
  // a stage keeps its colour whatever else is shown
  const colorOf = {};
  series.forEach((s, i) => { const k = STAGES.indexOf(s.stage); colorOf[s.stage] = k >= 0 ? k : STAGES.length + i; });
  for (const s of shown) {
    // a gap of more than 2.5 intervals without observations breaks the line
    let d = "", prev = null;
    s.ts.forEach((t, i) => {
      const gap = prev === null || t - prev > 2.5 * data.interval_s;
      d += (gap ? "M" : "L") + x(t).toFixed(1) + " " + y(s[key][i]).toFixed(1) + " ";
      prev = t;
    });
    const c = colorOf[s.stage];
    if (d) chart.append(svg("path", { d, fill: "none", stroke: COLORS[c % COLORS.length], "stroke-width": 2,
                                      "stroke-dasharray": DASHES[c % DASHES.length], class: "line",
                                      "data-stage": s.stage }));
    if (s.ts.length === 1) chart.append(svg("circle", { cx: x(s.ts[0]), cy: y(s[key][0]), r: 3,
                                                        fill: COLORS[c % COLORS.length] }));
  }
  $("chart").replaceChildren(chart);

  // the legend doubles as the stage filter; the table carries the same numbers as text
  const legend = $("legend");
  const have = [...legend.querySelectorAll("input")].map(i => i.value).join("\n");
  if (have !== series.map(s => s.stage).join("\n")) {
    legend.replaceChildren(el("legend", {}, "Stages shown"));
    for (const s of series) {
      const c = colorOf[s.stage];
      const box = el("input", { type: "checkbox", value: s.stage, id: "stage-" + s.stage, checked: !hiddenStages.has(s.stage) });
      box.addEventListener("change", () => {
        if (box.checked) hiddenStages.delete(s.stage); else hiddenStages.add(s.stage);
        drawChart(lastLatency);
      });
      const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.borderTopColor = COLORS[c % COLORS.length];
      const dash = DASHES[c % DASHES.length];
      swatch.style.borderTopStyle = dash === "2 3" ? "dotted" : dash ? "dashed" : "solid";
      legend.append(el("label", { for: "stage-" + s.stage }, box, swatch, s.stage));
    }
  }
  const body = $("latency-rows");
  body.replaceChildren(...series.map(s => {
    const n = s.ts.length - 1;
    return el("tr", { "data-stage": s.stage }, el("th", { scope: "row" }, s.stage),
              el("td", { class: "num" }, n >= 0 ? fmtNum(s.p50_ms[n], 1) : "–"),
              el("td", { class: "num" }, n >= 0 ? fmtNum(s.p95_ms[n], 1) : "–"),
              el("td", { class: "num" }, n >= 0 ? s.count[n] : 0),
              el("td", { class: "num" }, n >= 0 ? fmtNum(Math.max(...s.p95_ms), 1) : "–"));
  }));
  if (!series.length) body.append(el("tr", {}, el("td", { colspan: 5 }, "No latency observed yet.")));
}

async function pollLatency() {
  try {
    lastLatency = await api("/api/latency?stream=" + encodeURIComponent($("latency-stream").value));
  } catch (e) {
    $("chart").replaceChildren(el("p", {}, "No latency history: " + e.message));
    return;
  }
  drawChart(lastLatency);
}

document.addEventListener("DOMContentLoaded", () => {
  $("older").addEventListener("click", () => loadOlder().catch(e => { $("event-news").textContent = e.message; }));
  $("latency-stream").addEventListener("change", () => pollLatency());
  $("latency-pct").addEventListener("change", () => lastLatency && drawChart(lastLatency));
  every(POLL_STATUS_MS, pollStatus);
  every(POLL_EVENTS_MS, pollEvents);
  every(POLL_LATENCY_MS, pollLatency);
});

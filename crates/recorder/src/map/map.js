// The cauldron map: live positions from /api/0/last and /ws/last, a device's history from
// /api/0/locations, drawn in SVG over Web Mercator tiles. No libraries: the page must work from
// the one binary, offline too (tiles then simply do not appear).
"use strict";

const TILE = 256;
const SVG = "http://www.w3.org/2000/svg";
const view = { lat: 20, lon: 0, zoom: 2 };
const state = { last: [], track: [], selected: null, popup: null, waypoints: [], events: [], spans: [] };
const el = (id) => document.getElementById(id);

// --- projection -------------------------------------------------------------------------------
function project(lat, lon, zoom) {
  const size = TILE * 2 ** zoom;
  const sin = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
  return {
    x: ((lon + 180) / 360) * size,
    y: (0.5 - Math.log((1 + sin) / (1 - sin)) / (4 * Math.PI)) * size,
  };
}
function unproject(x, y, zoom) {
  const size = TILE * 2 ** zoom;
  const lon = (x / size) * 360 - 180;
  const n = Math.PI - (2 * Math.PI * y) / size;
  return { lat: (180 / Math.PI) * Math.atan(Math.sinh(n)), lon };
}
// Screen position of a coordinate in the current view.
function toScreen(lat, lon) {
  const map = el("map");
  const centre = project(view.lat, view.lon, view.zoom);
  const p = project(lat, lon, view.zoom);
  return { x: p.x - centre.x + map.clientWidth / 2, y: p.y - centre.y + map.clientHeight / 2 };
}
function metresPerPixel(lat) {
  return (40075016.686 * Math.cos((lat * Math.PI) / 180)) / (TILE * 2 ** view.zoom);
}

// --- drawing ----------------------------------------------------------------------------------
function drawTiles() {
  const layer = el("tiles");
  layer.replaceChildren();
  const url = window.cauldron.tileUrl;
  if (!url) return;
  const map = el("map");
  const centre = project(view.lat, view.lon, view.zoom);
  const left = centre.x - map.clientWidth / 2, top = centre.y - map.clientHeight / 2;
  const count = 2 ** view.zoom;
  for (let ty = Math.floor(top / TILE); ty * TILE < top + map.clientHeight; ty++) {
    if (ty < 0 || ty >= count) continue;
    for (let tx = Math.floor(left / TILE); tx * TILE < left + map.clientWidth; tx++) {
      const img = new Image();
      img.alt = "";
      img.style.left = `${tx * TILE - left}px`;
      img.style.top = `${ty * TILE - top}px`;
      // Shown once loaded: offline there are no tiles (and no broken-image icons), the rest works.
      img.style.visibility = "hidden";
      img.onload = () => (img.style.visibility = "visible");
      img.onerror = () => img.remove();
      const wrapped = ((tx % count) + count) % count;
      img.src = url.replace("{z}", view.zoom).replace("{x}", wrapped).replace("{y}", ty).replace("{s}", "a");
      layer.appendChild(img);
    }
  }
}

function svg(name, attributes, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  parent.appendChild(node);
  return node;
}

function drawOverlay() {
  const overlay = el("overlay");
  overlay.replaceChildren();
  drawPlaces(overlay);
  if (state.track.length > 0) {
    const points = state.track.map((p) => toScreen(p.lat, p.lon));
    const stroke = state.selected ? colour(state.selected) : "#d2322d";
    svg("polyline", { class: "track", points: points.map((p) => `${p.x},${p.y}`).join(" "), style: `stroke: ${stroke}` }, overlay);
    state.track.forEach((p, i) => {
      const dot = svg("circle", { class: "point", cx: points[i].x, cy: points[i].y, r: 3, style: `fill: ${stroke}` }, overlay);
      svg("title", {}, dot).textContent = `${p.isotst || ""} ${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}`;
      dot.addEventListener("click", (e) => showPopup(p, e));
    });
  }
  const labels = [];
  for (const last of state.last) {
    const at = toScreen(last.lat, last.lon);
    if (last.acc > 0) {
      svg("circle", { class: "accuracy", cx: at.x, cy: at.y, r: last.acc / metresPerPixel(last.lat) }, overlay);
    }
    const marker = svg("circle", { class: "marker", cx: at.x, cy: at.y, r: 8, "data-device": key(last), style: `fill: ${colour(key(last))}` }, overlay);
    svg("title", {}, marker).textContent = describe(last);
    marker.addEventListener("click", (e) => {
      showPopup(last, e);
      select(last.username, last.device);
    });
    if (isFace(last.face)) {
      svg("image", { href: `data:image/png;base64,${last.face}`, x: at.x - 12, y: at.y - 36, width: 24, height: 24 }, overlay);
    }
    const name = last.name || last.tid || key(last);
    const y = freeLine(labels, at.x + 11, at.y + 4, name.length * 7);
    svg("text", { class: "label", x: at.x + 11, y, "data-device": key(last) }, overlay).textContent = name;
  }
}

// The open device's regions (waypoints with a radius, drawn to scale), its other waypoints
// (pins), and its region transitions (squares: filled on enter, hollow on leave).
function drawPlaces(overlay) {
  for (const w of state.waypoints) {
    if (typeof w.lat !== "number" || typeof w.lon !== "number") continue;
    const at = toScreen(w.lat, w.lon);
    const r = w.rad > 0 ? Math.max(4, w.rad / metresPerPixel(w.lat)) : 7;
    if (w.rad > 0) {
      svg("circle", { class: "region", cx: at.x, cy: at.y, r }, overlay);
    } else {
      svg("path", { class: "pin", d: `M${at.x},${at.y - 7} l5,7 l-5,7 l-5,-7 z` }, overlay);
    }
    // Above the region, clear of the device's own marker and label inside it.
    svg("text", { class: "region-label", x: at.x, y: at.y - r - 4, "text-anchor": "middle" }, overlay).textContent = w.desc || "";
  }
  for (const e of state.events) {
    if (typeof e.lat !== "number" || typeof e.lon !== "number") continue;
    const at = toScreen(e.lat, e.lon);
    const square = svg("rect", { class: `event ${e.event === "enter" ? "enter" : "leave"}`, x: at.x - 5, y: at.y - 5, width: 10, height: 10 }, overlay);
    square.addEventListener("click", (event) => showPopup({ ...e, name: `${e.event} ${e.desc}` }, event));
  }
}

// The baseline for a label of about `width` pixels at (x, y) that clears the labels already
// placed: devices near each other get their names one under the other, not on top.
const LINE = 15;
function freeLine(placed, x, y, width) {
  const clashes = (top) => placed.some((b) => x < b.x + b.width && b.x < x + width && Math.abs(b.y - top) < LINE);
  let line = y;
  for (let tries = 0; tries < 12 && clashes(line); tries++) line += LINE;
  placed.push({ x, y: line, width });
  return line;
}

function draw() {
  drawTiles();
  drawOverlay();
  placePopup();
}

// --- popups -----------------------------------------------------------------------------------
// What a point says, as rows of a popup: the device's name, its local time, and whatever of
// battery, speed, accuracy, altitude and address it reported. Text only, never markup.
function details(o) {
  const rows = [["time", new Date(o.tst * 1000).toLocaleString()]];
  if (o.tzname) rows.push(["zone", o.tzname]);
  if (o.batt !== undefined) rows.push(["battery", `${o.batt}%`]);
  if (o.vel !== undefined) rows.push(["speed", `${o.vel} km/h`]);
  if (o.acc !== undefined) rows.push(["accuracy", `${o.acc} m`]);
  if (o.alt !== undefined) rows.push(["altitude", `${o.alt} m`]);
  if (o.addr) rows.push(["address", o.addr]);
  rows.push(["position", `${o.lat.toFixed(5)}, ${o.lon.toFixed(5)}`]);
  return rows;
}

function showPopup(o, event) {
  if (event) event.stopPropagation();
  const popup = el("popup");
  popup.replaceChildren();
  const title = document.createElement("h3");
  title.textContent = o.name || (o.username ? key(o) : state.selected) || "";
  popup.appendChild(title);
  const list = document.createElement("dl");
  for (const [label, value] of details(o)) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
  popup.appendChild(list);
  popup.hidden = false;
  state.popup = o;
  placePopup();
}

function placePopup() {
  const popup = el("popup");
  if (!state.popup || popup.hidden) return;
  const at = toScreen(state.popup.lat, state.popup.lon);
  popup.style.left = `${Math.max(4, at.x + 12)}px`;
  popup.style.top = `${Math.max(4, at.y - 12)}px`;
}

function closePopup() {
  el("popup").hidden = true;
  state.popup = null;
}

// --- data -------------------------------------------------------------------------------------
const key = (o) => `${o.username}/${o.device}`;
// A colour of its own per device, the same on every visit: a hue from a hash of its name.
function colour(name) {
  let hash = 0;
  for (const c of name) hash = (hash * 31 + c.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360}, 70%, 42%)`;
}
const isFace = (face) => typeof face === "string" && /^[A-Za-z0-9+/=\s]+$/.test(face);
function describe(o) {
  const parts = [o.name || key(o), o.isotst, `${o.lat}, ${o.lon}`];
  if (o.batt !== undefined) parts.push(`battery ${o.batt}%`);
  if (o.vel !== undefined) parts.push(`${o.vel} km/h`);
  return parts.filter(Boolean).join("\n");
}
function ago(tst) {
  const s = Math.max(0, Date.now() / 1000 - tst);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

async function loadLast() {
  const lasts = await api("api/0/last");
  // ping/ping is the Recorder's health check, not a person.
  state.last = lasts.filter((o) => typeof o.lat === "number" && typeof o.lon === "number" && key(o) !== "ping/ping");
  const list = el("devices");
  list.replaceChildren();
  const select = el("device");
  const chosen = select.value;
  select.replaceChildren();
  for (const last of state.last) {
    const item = document.createElement("li");
    item.dataset.device = key(last);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour(key(last));
    item.appendChild(swatch);
    if (isFace(last.face)) {
      const img = document.createElement("img");
      img.src = `data:image/png;base64,${last.face}`;
      img.alt = "";
      item.appendChild(img);
    }
    const text = document.createElement("span");
    text.textContent = last.name ? `${last.name} (${key(last)})` : key(last);
    const seen = document.createElement("span");
    seen.className = "seen";
    seen.textContent = `last seen ${ago(last.tst)}`;
    text.appendChild(seen);
    item.appendChild(text);
    item.addEventListener("click", () => {
      view.lat = last.lat;
      view.lon = last.lon;
      view.zoom = Math.max(view.zoom, 14);
      draw();
    });
    list.appendChild(item);
    const option = document.createElement("option");
    option.value = option.textContent = key(last);
    select.appendChild(option);
  }
  if (chosen) select.value = chosen;
  drawOverlay();
}

async function loadHistory() {
  const [user, device] = (el("device").value || "/").split("/");
  if (!user || !device) return;
  const query = new URLSearchParams({ user, device, format: "json" });
  const from = utc(el("from").value), to = utc(el("to").value);
  if (from) query.set("from", from);
  if (to) query.set("to", to);
  // Live points of this device that arrive while the history loads are pushed onto the track
  // shown now; they are kept if the loaded history (queried before they were stored) lacks them.
  const shown = state.selected === `${user}/${device}` ? state.track : [];
  const [result, waypoints, events, timeline] = await Promise.all([
    api(`api/0/locations?${query}`),
    api(`api/0/waypoints?${new URLSearchParams({ user, device })}`),
    api(`api/0/events?${query}`),
    api(`api/0/timeline?${query}`),
  ]);
  state.selected = `${user}/${device}`;
  const loaded = result.data.filter((p) => typeof p.lat === "number").sort((a, b) => a.tst - b.tst);
  const newest = loaded.length ? loaded[loaded.length - 1].tst : -Infinity;
  state.track = loaded.concat(shown.filter((p) => p.tst > newest && p.tst <= rangeEnd()));
  state.waypoints = waypoints.waypoints;
  state.events = events.events;
  state.spans = timeline.timeline;
  el("status").textContent = `${state.track.length} points of ${user}/${device}`;
  showTimeline();
  fit(state.track);
}

// --- timeline ---------------------------------------------------------------------------------
function duration(seconds) {
  const minutes = Math.round(seconds / 60);
  return minutes < 60 ? `${minutes} min` : `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

// Stays with their place and duration, trips with their distance; a tap shows that part.
function showTimeline() {
  const list = el("timeline");
  list.replaceChildren();
  const clock = (tst) => new Date(tst * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  for (const span of state.spans) {
    const item = document.createElement("li");
    item.className = span.type;
    const what = span.type === "stay"
      ? (span.place || `${span.lat.toFixed(4)}, ${span.lon.toFixed(4)}`)
      : `${(span.distance / 1000).toFixed(1)} km`;
    item.textContent = `${clock(span.from)}–${clock(span.to)} · ${what} · ${duration(span.to - span.from)}`;
    item.addEventListener("click", () => {
      const part = state.track.filter((p) => p.tst >= span.from && p.tst <= span.to);
      fit(part.length ? part : state.track);
    });
    list.appendChild(item);
  }
}

// A datetime-local value (the viewer's own time) as the API's UTC time.
function utc(local) {
  if (!local) return "";
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString().slice(0, 19);
}

// A Date as a datetime-local value, in the viewer's own time.
function localValue(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

// The end of the range, in API seconds, or none when it is open (now).
function rangeEnd() {
  const to = el("to").value;
  return to ? new Date(to).getTime() / 1000 : Infinity;
}

function select(user, device) {
  const select = el("device");
  if (![...select.options].some((o) => o.value === `${user}/${device}`)) {
    const option = document.createElement("option");
    option.value = option.textContent = `${user}/${device}`;
    select.appendChild(option);
  }
  select.value = `${user}/${device}`;
  loadHistory().catch(report);
}

// Centres and zooms to show every given point.
function fit(points) {
  if (points.length === 0) return draw();
  const lats = points.map((p) => p.lat), lons = points.map((p) => p.lon);
  const north = Math.max(...lats), south = Math.min(...lats), east = Math.max(...lons), west = Math.min(...lons);
  const map = el("map");
  let zoom = 17;
  while (zoom > 1) {
    const a = project(north, west, zoom), b = project(south, east, zoom);
    if (b.x - a.x < map.clientWidth * 0.8 && b.y - a.y < map.clientHeight * 0.8) break;
    zoom--;
  }
  view.zoom = zoom;
  const ne = project(north, east, zoom), sw = project(south, west, zoom);
  const centre = unproject((ne.x + sw.x) / 2, (ne.y + sw.y) / 2, zoom);
  view.lat = centre.lat;
  view.lon = centre.lon;
  draw();
}

function report(error) {
  el("status").textContent = String(error.message || error);
}

// --- live updates -----------------------------------------------------------------------------
function live() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}${location.pathname.replace(/[^/]*$/, "")}ws/last`);
  socket.onopen = () => socket.send("LAST");
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message._type !== "location") return;
    // The open track grows with the device's new positions while the range reaches them.
    if (key(message) === state.selected && typeof message.lat === "number" && message.tst <= rangeEnd()) {
      const last = state.track[state.track.length - 1];
      if (!last || message.tst > last.tst) {
        state.track.push(message);
        el("status").textContent = `${state.track.length} points of ${state.selected}`;
      }
    }
    loadLast().catch(report);
  };
  socket.onclose = () => setTimeout(live, 1000);
}

// --- interaction ------------------------------------------------------------------------------
function zoomBy(delta, screenX, screenY) {
  const map = el("map");
  const x = screenX ?? map.clientWidth / 2, y = screenY ?? map.clientHeight / 2;
  const centre = project(view.lat, view.lon, view.zoom);
  const anchor = unproject(centre.x + x - map.clientWidth / 2, centre.y + y - map.clientHeight / 2, view.zoom);
  const zoom = Math.max(1, Math.min(19, view.zoom + delta));
  if (zoom === view.zoom) return;
  view.zoom = zoom;
  // Keep the point under the cursor where it is.
  const a = project(anchor.lat, anchor.lon, zoom);
  const c = unproject(a.x - x + map.clientWidth / 2, a.y - y + map.clientHeight / 2, zoom);
  view.lat = c.lat;
  view.lon = c.lon;
  draw();
}

// A tour's view (/view/<uuid>): one device's track between two times, for whoever has the
// link; no login, no other devices, no controls but the map's. Followed while the tour runs.
function setUpTour(tour) {
  document.body.classList.add("tour");
  document.querySelector("#panel h1").textContent = tour.label || "Tour";
  state.selected = tour.uuid;
  const load = async () => {
    const result = await api(`${encodeURIComponent(tour.uuid)}/locations`);
    const first = state.track.length === 0;
    state.track = result.data.filter((p) => typeof p.lat === "number").sort((a, b) => a.tst - b.tst);
    const span = `${new Date(tour.from * 1000).toLocaleString()} – ${new Date(tour.to * 1000).toLocaleString()}`;
    el("status").textContent = `${state.track.length} points, ${span}`;
    if (first) fit(state.track); else draw();
  };
  load().catch(report);
  const timer = setInterval(() => {
    if (Date.now() / 1000 > tour.to) clearInterval(timer);
    load().catch(report);
  }, 60000);
}

function setUp() {
  const map = el("map");
  let drag = null;
  map.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, centre: project(view.lat, view.lon, view.zoom) };
    map.setPointerCapture(e.pointerId);
  });
  map.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const c = unproject(drag.centre.x - (e.clientX - drag.x), drag.centre.y - (e.clientY - drag.y), view.zoom);
    view.lat = c.lat;
    view.lon = c.lon;
    draw();
  });
  map.addEventListener("pointerup", () => (drag = null));
  map.addEventListener("wheel", (e) => {
    e.preventDefault();
    const box = map.getBoundingClientRect();
    zoomBy(e.deltaY < 0 ? 1 : -1, e.clientX - box.left, e.clientY - box.top);
  }, { passive: false });
  el("zoom-in").addEventListener("click", () => zoomBy(1));
  el("zoom-out").addEventListener("click", () => zoomBy(-1));
  el("fit").addEventListener("click", () => fit(state.track.length ? state.track : state.last));
  el("history").addEventListener("submit", (e) => {
    e.preventDefault();
    loadHistory().catch(report);
  });
  window.addEventListener("resize", draw);
  map.addEventListener("click", closePopup);
  el("popup").addEventListener("click", (e) => e.stopPropagation());
  for (const preset of el("presets").querySelectorAll("button")) {
    preset.addEventListener("click", () => {
      const now = new Date();
      const start = preset.dataset.today !== undefined
        ? new Date(now.getFullYear(), now.getMonth(), now.getDate())
        : new Date(now.getTime() - Number(preset.dataset.hours) * 3600 * 1000);
      el("from").value = localValue(start);
      el("to").value = "";
      loadHistory().catch(report);
    });
  }

  if (window.cauldron.tour) return setUpTour(window.cauldron.tour);

  // ?user=&device=&from=&to= open a history directly (YYYY-MM-DD, or with a time); the
  // default is today until now.
  const params = new URLSearchParams(location.search);
  const asLocal = (text, end) => (text.includes("T") ? text.slice(0, 16) : `${text}T${end ? "23:59" : "00:00"}`);
  const now = new Date();
  el("from").value = params.get("from") ? asLocal(params.get("from"), false) : localValue(new Date(now.getFullYear(), now.getMonth(), now.getDate()));
  el("to").value = params.get("to") ? asLocal(params.get("to"), true) : "";
  loadLast()
    .then(() => {
      if (params.get("user") && params.get("device")) return select(params.get("user"), params.get("device"));
      fit(state.last);
    })
    .catch(report);
  live();
}

setUp();

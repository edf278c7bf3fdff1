// prostate-fast view: worklist, slide (Deep Zoom), prediction layer, review marks. No network
// beyond the server that served this page.
"use strict";
const state = { rows: [], current: -1, overlay: null, info: null, contours: null, canReview: false };
const $ = (id) => document.getElementById(id);
const viewer = OpenSeadragon({
  id: "viewer", showNavigationControl: false, drawer: "canvas", crossOriginPolicy: false,
  animationTime: 0.3, maxZoomPixelRatio: 2, preserveImageSizeOnResize: true,
});

function pct(v) { return v == null ? "" : (100 * v).toFixed(1) + " %"; }

async function loadWorklist() {
  const data = await (await fetch("/api/worklist")).json();
  state.rows = data.rows; state.canReview = data.review;
  $("review").disabled = !data.review; $("note").disabled = !data.review;
  const body = document.querySelector("#worklist tbody");
  body.innerHTML = "";
  for (const r of data.rows) {
    const tr = document.createElement("tr");
    tr.dataset.index = r.index;
    if (r.status.startsWith("error") || r.status.startsWith("needs manual read")) tr.classList.add("failed");
    if (r.status === "no tissue") tr.classList.add("notissue");
    const thumb = r.thumbnail ? `<img alt="" loading="lazy" src="/api/thumb/${r.index}.png">` : "";
    tr.innerHTML = `<td>${r.rank ?? ""}</td><td>${thumb}</td><td class="name"></td>` +
      `<td class="status"></td><td>${r.status !== "ok" || r.score == null ? "" : r.score.toFixed(3)}</td>` +
      `<td>${r.status !== "ok" ? "" : pct(r.positive_share)}</td><td class="mark">${r.review ? "✓" : ""}</td>`;
    tr.querySelector(".name").textContent = r.name;
    tr.querySelector(".status").textContent = r.status;
    tr.addEventListener("click", () => openSlide(r.index));
    body.appendChild(tr);
  }
}

function overlayOpacity() { return $("overlay-toggle").checked ? $("opacity").value / 100 : 0; }

function addOverlay() {
  if (state.overlay) { viewer.world.removeItem(state.overlay); state.overlay = null; }
  if (!state.info || !state.info.classes.length) return;
  viewer.addTiledImage({
    tileSource: `/api/overlay/${state.current}.dzi?mode=${$("mode").value}`,
    x: 0, y: 0, width: 1, opacity: overlayOpacity(),
    success: (e) => { state.overlay = e.item; },
  });
}

function legend() {
  const el = $("legend"); el.innerHTML = "";
  if (!state.info) return;
  state.info.classes.forEach((c, i) => {
    if (i === 0) return;
    const s = document.createElement("span"); const sw = document.createElement("i");
    sw.style.background = `rgb(${state.info.colours[i].join(",")})`;
    s.appendChild(sw); s.appendChild(document.createTextNode(c)); el.appendChild(s);
  });
}

async function openSlide(index) {
  const row = state.rows.find((r) => r.index === index);
  if (!row) return;
  state.current = index; state.info = null; state.overlay = null; state.contours = null;
  document.querySelectorAll("#worklist tr").forEach((tr) => tr.classList.toggle("current", tr.dataset.index == index));
  document.querySelector(`#worklist tr[data-index="${index}"]`).scrollIntoView({ block: "nearest" });
  $("title").textContent = row.name; $("probe").textContent = ""; $("note").value = row.review ? row.review.note : "";
  $("review").textContent = row.review ? "Unmark reviewed" : "Mark reviewed";
  if (!row.viewable) { viewer.close(); $("title").textContent = `${row.name}: slide file not available`; legend(); return; }
  const resp = await fetch(`/api/info/${index}`);
  if (!resp.ok) { viewer.close(); $("title").textContent = `${row.name}: ${await resp.text()}`; return; }
  state.info = await resp.json();
  legend();
  viewer.open({ tileSource: `/api/slide/${index}.dzi` });
  viewer.addOnceHandler("open", () => { addOverlay(); if ($("contours").checked) loadContours(); });
}

function step(delta) {
  if (!state.rows.length) return;
  const pos = state.rows.findIndex((r) => r.index === state.current);
  const next = Math.min(state.rows.length - 1, Math.max(0, pos < 0 ? 0 : pos + delta));
  openSlide(state.rows[next].index);
}

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" && e.target.type === "text") return;
  if (["n", "j", "PageDown"].includes(e.key)) { step(1); e.preventDefault(); }
  if (["p", "k", "PageUp"].includes(e.key)) { step(-1); e.preventDefault(); }
}, true);

$("overlay-toggle").addEventListener("change", () => state.overlay && state.overlay.setOpacity(overlayOpacity()));
$("opacity").addEventListener("input", () => state.overlay && state.overlay.setOpacity(overlayOpacity()));
$("mode").addEventListener("change", addOverlay);

$("review").addEventListener("click", async () => {
  const row = state.rows.find((r) => r.index === state.current);
  if (!row) return;
  const resp = await fetch("/api/review", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ slide: row.name, reviewed: !row.review, note: $("note").value }) });
  if (!resp.ok) { $("probe").textContent = await resp.text(); return; }
  row.review = (await resp.json()).review;
  document.querySelector(`#worklist tr[data-index="${row.index}"] .mark`).textContent = row.review ? "✓" : "";
  $("review").textContent = row.review ? "Unmark reviewed" : "Mark reviewed";
});

let probeTimer = null;
viewer.element.addEventListener("pointermove", (e) => {
  if (!state.info || !state.info.classes.length || viewer.world.getItemCount() === 0) return;
  const rect = viewer.element.getBoundingClientRect();
  const at = new OpenSeadragon.Point(e.clientX - rect.left, e.clientY - rect.top);
  clearTimeout(probeTimer);
  probeTimer = setTimeout(async () => {
    const p = viewer.world.getItemAt(0).viewerElementToImageCoordinates(at);
    const r = await fetch(`/api/probe/${state.current}?x=${p.x}&y=${p.y}`);
    if (!r.ok) return;
    const d = await r.json();
    $("probe").textContent = d.tile ? Object.entries(d.prob).map(([k, v]) => `${k} ${v.toFixed(2)}`).join("  ") : "";
  }, 60);
});

// GeoJSON contours, drawn on a canvas over the viewer (optional).
async function loadContours() {
  const row = state.rows.find((r) => r.index === state.current);
  if (!row || !row.geojson) { state.contours = null; drawContours(); return; }
  state.contours = await (await fetch(`/api/geojson/${row.index}`)).json();
  drawContours();
}
function drawContours() {
  const cv = $("contour-layer"), el = viewer.element;
  cv.width = el.clientWidth; cv.height = el.clientHeight; cv.style.top = el.offsetTop + "px";
  const ctx = cv.getContext("2d"); ctx.clearRect(0, 0, cv.width, cv.height);
  if (!$("contours").checked || !state.contours || viewer.world.getItemCount() === 0) return;
  const item = viewer.world.getItemAt(0);
  ctx.lineWidth = 1.5;
  for (const f of (state.contours.features || []).slice(0, 20000)) {
    const g = f.geometry || {}, polys = g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
    const col = ((f.properties || {}).classification || {}).color;
    ctx.strokeStyle = col ? `rgb(${col.join(",")})` : "#0f0";
    for (const poly of polys) for (const ring of poly) {
      ctx.beginPath();
      ring.forEach(([x, y], i) => { const q = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y)); i ? ctx.lineTo(q.x, q.y) : ctx.moveTo(q.x, q.y); });
      ctx.closePath(); ctx.stroke();
    }
  }
}
$("contours").addEventListener("change", () => ($("contours").checked && !state.contours ? loadContours() : drawContours()));
viewer.addHandler("update-viewport", drawContours);

loadWorklist().then(() => { if (state.rows.length === 1) openSlide(state.rows[0].index); });

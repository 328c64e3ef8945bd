// The page of `features serve`: upload an image, list the ranked results, draw the verified
// matches between the query and a chosen result. Plain browser JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null; // {file, imageUrl} of the last query

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

async function apiJson(response) {
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    throw new Error((body && body.error) || `HTTP ${response.status}`);
  }
  return body;
}

function loadImage(url) {
  return new Promise((resolve) => {
    if (!url) { resolve(null); return; }
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);
    img.src = url;
  });
}

// A browser shows JPEG, PNG, GIF, WebP, BMP; for other formats ask the server for a JPEG.
async function queryImageUrl(file) {
  const direct = URL.createObjectURL(file);
  if (await loadImage(direct)) return direct;
  URL.revokeObjectURL(direct);
  const r = await fetch("/api/thumb", { method: "POST", body: file });
  return r.ok ? URL.createObjectURL(await r.blob()) : null;
}

// Runs the query of `file` with the current controls; a newer search supersedes an older
// one still in flight (its answer is dropped).
let searches = 0;
async function search(file) {
  const seq = ++searches;
  $("matches").hidden = true;
  $("results").innerHTML = "";
  setStatus("searching\u2026");
  if (!current || current.file !== file) {
    if (current && current.imageUrl) URL.revokeObjectURL(current.imageUrl);
    const imageUrl = await queryImageUrl(file);
    if (seq !== searches) return;
    current = { file, imageUrl };
    const img = $("query-image");
    if (imageUrl) { img.src = imageUrl; img.hidden = false; } else { img.hidden = true; }
    $("drop-text").textContent = file.name || "query image";
  }
  const k = $("k").value;
  const rerank = $("rerank").checked ? 1 : 0;
  try {
    const r = await fetch(`/api/search?k=${k}&rerank=${rerank}`, {
      method: "POST", body: file,
      headers: { "Content-Type": file.type || "application/octet-stream" },
    });
    const data = await apiJson(r);
    if (seq === searches) showResults(data);
  } catch (e) {
    if (seq === searches) setStatus(`search failed: ${e.message}`, true);
  }
}

// The controls apply to the query on screen: changing one runs it again.
function rerun() {
  if (current) search(current.file);
}

function showResults(data) {
  const list = $("results");
  list.innerHTML = "";
  data.results.forEach((hit, i) => {
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.key = hit.key;
    li.dataset.rank = String(i + 1);
    li.title = "show the verified matches";
    const thumb = document.createElement("div");
    thumb.className = "thumb";
    const img = document.createElement("img");
    img.alt = hit.key;
    img.loading = "lazy";
    img.src = hit.thumbnail;
    img.onerror = () => { img.remove(); thumb.textContent = "no thumbnail"; };
    thumb.appendChild(img);
    const meta = document.createElement("div");
    meta.className = "meta";
    const label = hit.name || (hit.label >= 0 ? `label ${hit.label}` : "no label");
    const inliers = hit.inliers !== undefined ? ` \u00b7 ${hit.inliers} inliers` : "";
    meta.innerHTML = `<span class="rank">${i + 1}.</span> <span class="score"></span>` +
                     `<span class="inl"></span> \u00b7 <span class="label"></span>`;
    meta.querySelector(".score").textContent = hit.score.toFixed(4);
    meta.querySelector(".inl").textContent = inliers;
    meta.querySelector(".label").textContent = label;
    const key = document.createElement("div");
    key.className = "key";
    key.textContent = hit.key;
    li.append(thumb, meta, key);
    li.addEventListener("click", () => showMatches(hit, li));
    list.appendChild(li);
  });
  const t = data.timing_ms;
  setStatus(`${data.results.length} results in ${t.total.toFixed(0)} ms ` +
            `(query ${t.query.toFixed(0)} ms, search ${t.search.toFixed(0)} ms)`);
}

async function showMatches(hit, li) {
  if (!current) return;
  document.querySelectorAll(".result.selected").forEach((el) => el.classList.remove("selected"));
  li.classList.add("selected");
  const panel = $("matches");
  const canvas = $("match-canvas");
  canvas.dataset.drawn = "";
  panel.hidden = false;
  $("match-title").textContent = hit.key;
  $("match-status").textContent = "verifying\u2026";
  try {
    const r = await fetch(`/api/matches?key=${encodeURIComponent(hit.key)}`, {
      method: "POST", body: current.file,
      headers: { "Content-Type": current.file.type || "application/octet-stream" },
    });
    const data = await apiJson(r);
    const [qimg, rimg] = await Promise.all([loadImage(current.imageUrl),
                                            loadImage(data.result.thumbnail)]);
    const same = isSelfMatch(data);
    const lines = drawMatches(canvas, data, qimg, rimg, same ? MAX_SELF_LINES : MAX_LINES);
    const n = data.inliers.toLocaleString("en");
    // aligned and scored 1: the same bytes' features; aligned only: the same picture
    // re-encoded or retouched in place
    const identical = same && hit.score >= 0.9999;
    const what = identical
      ? `the query image itself (or an identical copy): ${n} features match in place`
      : same
        ? `the same picture, aligned with the query: ${n} verified matches land in place`
        : `${n} verified matches (geometric verification: similarity transforms from ` +
          `single matches, refined by local optimization)`;
    const showing = lines < data.inliers ? ` \u00b7 showing ${lines} of ${n}` : "";
    $("match-status").textContent =
      `${what}${showing} \u00b7 ${data.result.name || "no label"} \u00b7 ` +
      `score ${hit.score.toFixed(4)}`;
    canvas.dataset.inliers = String(data.inliers);
    canvas.dataset.lines = String(lines);
    canvas.dataset.self = identical ? "1" : "";
    canvas.dataset.aligned = same ? "1" : "";
    canvas.dataset.drawn = "1";
    panel.scrollIntoView({ block: "nearest" });
  } catch (e) {
    $("match-status").textContent = `verification failed: ${e.message}`;
  }
}

// At most this many lines are drawn: past a few hundred they merge into a solid block.
const MAX_LINES = 150;
// An image against itself: every line is the same horizontal shift, a few show it.
const MAX_SELF_LINES = 60;

// The same picture: the result has the query's size and nearly every match lands where it
// started (fractions of width and height within 1%).
function isSelfMatch(data) {
  const m = data.matches;
  if (m.length < 4 || data.query.width !== data.result.width ||
      data.query.height !== data.result.height) return false;
  const still = m.filter(([qx, qy, rx, ry]) =>
    Math.abs(qx - rx) < 0.01 && Math.abs(qy - ry) < 0.01).length;
  return still >= 0.9 * m.length;
}

// Up to `limit` matches spread over the query image: the matches are put in the cells of a
// grid over the query, and the cells give one match each in turn.
function spreadSubset(matches, limit) {
  if (matches.length <= limit) return matches;
  const G = 12;
  const cells = new Map();
  matches.forEach((m) => {
    const c = Math.min(G - 1, Math.floor(m[0] * G)) * G + Math.min(G - 1, Math.floor(m[1] * G));
    if (!cells.has(c)) cells.set(c, []);
    cells.get(c).push(m);
  });
  const queues = [...cells.keys()].sort((a, b) => a - b).map((c) => cells.get(c));
  const out = [];
  for (let round = 0; out.length < limit; round++) {
    for (const q of queues) {
      if (round < q.length && out.length < limit) out.push(q[round]);
    }
  }
  return out;
}

// Query on the left, result on the right, both scaled to one height; a line per match drawn
// (a spread subset of them when there are many). Returns the number of lines drawn.
function drawMatches(canvas, data, qimg, rimg, limit) {
  const H = 360, gap = 16;
  const qw = Math.max(1, Math.round(H * data.query.width / Math.max(1, data.query.height)));
  const rw = Math.max(1, Math.round(H * data.result.width / Math.max(1, data.result.height)));
  canvas.width = qw + gap + rw;
  canvas.height = H;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, canvas.width, H);
  const place = (img, x, w) => {
    if (img) { ctx.drawImage(img, x, 0, w, H); return; }
    ctx.fillStyle = "#d9dee3";
    ctx.fillRect(x, 0, w, H);
  };
  place(qimg, 0, qw);
  place(rimg, qw + gap, rw);
  const shown = spreadSubset(data.matches, limit);
  ctx.lineWidth = 1.5;
  shown.forEach(([qx, qy, rx, ry], i) => {
    const hue = (i * 47) % 360;
    ctx.strokeStyle = `hsla(${hue}, 90%, 50%, 0.85)`;
    ctx.fillStyle = ctx.strokeStyle;
    const x1 = qx * qw, y1 = qy * H, x2 = qw + gap + rx * rw, y2 = ry * H;
    ctx.beginPath(); ctx.moveTo(x1, y1); ctx.lineTo(x2, y2); ctx.stroke();
    ctx.beginPath(); ctx.arc(x1, y1, 3, 0, 2 * Math.PI); ctx.fill();
    ctx.beginPath(); ctx.arc(x2, y2, 3, 0, 2 * Math.PI); ctx.fill();
  });
  return shown.length;
}

function setup() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => {
    if (e.target.files.length) search(e.target.files[0]);
  });
  ["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((name) => drop.addEventListener(name, (e) => {
    e.preventDefault(); drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => {
    if (e.dataTransfer.files.length) search(e.dataTransfer.files[0]);
  });
  $("k").addEventListener("change", rerun);
  $("rerank").addEventListener("change", rerun);
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
  });
  fetch("/api/health").then(apiJson).then((h) => {
    $("store-info").textContent = `${h.images} images, ${h.indexed} indexed \u00b7 ` +
      `${h.preset} preset, ${h.words} words` + (h.thumbnails ? "" : " \u00b7 no thumbnails");
    if (h.image_queries === false) {
      // an index no image can be encoded for: an upload could only fail, so none is offered
      drop.hidden = true;
      $("query-panel").querySelector(".options").hidden = true;
      $("status").textContent = `No queries by image on this index: ${h.image_queries_reason}`;
    }
  }).catch((e) => { $("store-info").textContent = `server unreachable: ${e.message}`; });
}

setup();

// grukit serve: the page. Plain JS, no build step. One panel per task; every drawn value carries its number
// in a data- attribute and every chart its scale (data-x0/xk/y0/yk: pixel = x0 + xk * value), so a test (or a
// curious user) can check the picture against the API's answer.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";
let RUNS = [];
window.grukit = { last: null };                       // the last API answer, for inspection

function token() { return localStorage.getItem("grukit-token") || ""; }
function headers(extra = {}) {
  const h = Object.assign({}, extra);
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}
async function api(path, opts = {}) {
  const r = await fetch(path, Object.assign({}, opts, { headers: headers(opts.headers || {}) }));
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error(`${r.status}: ${body.detail || body}`);
  return body;
}
async function post(path, json) {
  const out = await api(path, { method: "POST", body: JSON.stringify(json), headers: { "Content-Type": "application/json" } });
  window.grukit.last = out;
  return out;
}
function showError(e) { $("#error").textContent = e ? String(e.message || e) : ""; }
function el(tag, attrs = {}, text = "") {
  const ns = ["svg", "path", "polyline", "polygon", "circle", "rect", "line", "text", "g"].includes(tag);
  const e = ns ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

// ---------------------------------------------------------------- CSV
function parseCSV(text) {
  // numbers per row; a header row (non-numeric) is skipped; returns {header, rows}
  const lines = text.trim().split(/\r?\n/).filter(l => l.trim());
  let header = null, rows = [];
  for (const line of lines) {
    const cells = line.split(/[,;\t]/).map(c => c.trim());
    const nums = cells.map(Number);
    if (nums.some(n => Number.isNaN(n)) && rows.length === 0 && header === null) { header = cells; continue; }
    rows.push(cells);
  }
  return { header, rows };
}
function numericColumns(csv) {
  // the columns whose every cell is a number (dates and ids are left out)
  const n = csv.rows[0]?.length || 0, cols = [];
  for (let j = 0; j < n; j++) if (csv.rows.every(r => r[j] !== "" && !Number.isNaN(Number(r[j])))) cols.push(j);
  return cols;
}

// ---------------------------------------------------------------- charts
function scale(svg, xs, ys, pad = 36) {
  const w = svg.clientWidth || 900, h = svg.clientHeight || 320;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  let [x1, x2] = [Math.min(...xs), Math.max(...xs)], [y1, y2] = [Math.min(...ys), Math.max(...ys)];
  if (x1 === x2) x2 = x1 + 1;
  if (y1 === y2) { y1 -= 1; y2 += 1; }
  const xk = (w - 2 * pad) / (x2 - x1), yk = -(h - 2 * pad) / (y2 - y1);
  const x0 = pad - xk * x1, y0 = h - pad - yk * y1;
  Object.assign(svg.dataset, { x0, xk, y0, yk });
  svg.append(el("text", { x: 4, y: pad - 8 }, y2.toPrecision(4)), el("text", { x: 4, y: h - pad + 14 }, y1.toPrecision(4)));
  return { sx: x => x0 + xk * x, sy: y => y0 + yk * y };
}
const pts = (xs, ys, s) => xs.map((x, i) => `${s.sx(x).toFixed(2)},${s.sy(ys[i]).toFixed(2)}`).join(" ");

// ---------------------------------------------------------------- panels per task
const PANELS = {
  forecast(run, body) {
    body.innerHTML = `<p>Paste a CSV: one numeric column per target (a date column is fine), oldest row first.</p>
      <textarea id="csv" placeholder="date,value&#10;2020-01,112&#10;..."></textarea>
      <div class="row"><button id="submit">Forecast ${run.inputs.horizon} steps</button></div>
      <svg id="chart" class="chart"></svg>`;
    $("#submit").onclick = async () => {
      showError();
      try {
        const csv = parseCSV($("#csv").value), cols = numericColumns(csv);
        const C = run.inputs.targets.length;
        if (!csv.rows.length || cols.length < C) throw new Error(`need ${C} numeric column(s) and some rows`);
        const use = cols.slice(-C);
        const series = csv.rows.map(r => use.map(j => Number(r[j])));
        const out = await post(`/runs/${run.name}/forecast`, { series: [series] });
        drawForecast(series.map(r => r[0]), out.forecasts[0]);
      } catch (e) { showError(e); }
    };
  },
  classify(run, body) {
    body.innerHTML = `<p>Upload or paste one sequence as CSV: a row per time step, ${run.inputs.features} numeric column(s).</p>
      <input id="file" type="file" accept=".csv,.txt"> <textarea id="csv"></textarea>
      <div class="row"><button id="submit">Classify</button></div><div id="bars" class="bars"></div>`;
    $("#file").onchange = async e => { $("#csv").value = await e.target.files[0].text(); };
    $("#submit").onclick = async () => {
      showError();
      try {
        const csv = parseCSV($("#csv").value), cols = numericColumns(csv).slice(-run.inputs.features);
        const seq = csv.rows.map(r => cols.map(j => Number(r[j])));
        const out = await post(`/runs/${run.name}/classify`, { sequences: [seq] });
        drawBars(out.predictions[0]);
      } catch (e) { showError(e); }
    };
  },
  autoencoder(run, body) {
    body.innerHTML = `<p>Paste a CSV of ${run.inputs.features} numeric column(s) (at least ${run.inputs.window} rows).</p>
      <textarea id="csv"></textarea><div class="row"><button id="submit">Score</button></div>
      <svg id="chart" class="chart"></svg>`;
    $("#submit").onclick = async () => {
      showError();
      try {
        const csv = parseCSV($("#csv").value), cols = numericColumns(csv).slice(-run.inputs.features);
        const out = await post(`/runs/${run.name}/anomalies`, { values: csv.rows.map(r => cols.map(j => Number(r[j]))) });
        drawScores(out);
      } catch (e) { showError(e); }
    };
  },
  lm(run, body) {
    body.innerHTML = `<div class="row"><input id="prompt" size="40" placeholder="prompt">
      <label>length <input id="length" type="number" value="200" min="1"></label>
      <label>temperature <input id="temperature" type="number" value="0.8" step="0.1" min="0"></label>
      <label>seed <input id="seed" type="number" value="0"></label><button id="submit">Generate</button></div>
      <pre id="output"></pre><p id="state" class="status"></p>`;
    $("#submit").onclick = () => streamText(run).catch(showError);
  },
  music(run, body) {
    body.innerHTML = `<div class="row"><label>frames <input id="steps" type="number" value="64" min="1"></label>
      <label>temperature <input id="temperature" type="number" value="1" step="0.1" min="0"></label>
      <label>seed <input id="seed" type="number" value="0"></label><button id="submit">Generate</button>
      <a id="midi" download="grukit.mid" hidden>download MIDI</a></div><svg id="roll" class="roll"></svg>`;
    $("#submit").onclick = async () => {
      showError();
      try {
        const out = await post(`/runs/${run.name}/generate`, { steps: +$("#steps").value,
          temperature: +$("#temperature").value, seed: +$("#seed").value });
        const piece = out.pieces[0];
        drawRoll(piece);
        const a = $("#midi");
        a.href = "data:audio/midi;base64," + piece.midi_base64;
        a.hidden = false;
      } catch (e) { showError(e); }
    };
  },
  speech(run, body) {
    body.innerHTML = `<p>Upload audio (wav, flac, ogg); the model reads ${run.inputs.sample_rate} Hz.</p>
      <div class="row"><input id="file" type="file" accept="audio/*"><button id="submit">Transcribe</button>
      ${run.streaming ? '<button id="stream">Stream in 100 ms chunks</button>' : ""}</div>
      <p class="hint">partial</p><div id="partial"></div><p class="hint">transcript</p><div id="transcript"></div>`;
    $("#submit").onclick = async () => {
      showError();
      try {
        const fd = new FormData();
        fd.append("file", $("#file").files[0]);
        const out = await api(`/runs/${run.name}/transcribe`, { method: "POST", body: fd });
        window.grukit.last = out;
        $("#transcript").textContent = out.text;
      } catch (e) { showError(e); }
    };
    if (run.streaming) $("#stream").onclick = () => streamAudio(run).catch(showError);
  },
};

function drawForecast(history, fc) {
  const svg = $("#chart"); svg.replaceChildren();
  const n = history.length, H = fc.point.length;
  const hx = history.map((_, i) => i), fx = fc.point.map((_, i) => n + i);
  const col = a => a ? a.map(r => r[0]) : null;
  const p = col(fc.point), lo = col(fc.lo), hi = col(fc.hi);
  const s = scale(svg, [...hx, ...fx], [...history, ...p, ...(lo || []), ...(hi || [])]);
  if (lo && hi) svg.append(el("polygon", { class: "interval", points: pts(fx, hi, s) + " " + pts([...fx].reverse(), [...lo].reverse(), s) }));
  svg.append(el("polyline", { class: "history", points: pts(hx, history, s) }));
  svg.append(el("polyline", { class: "forecast", points: pts([n - 1, ...fx], [history[n - 1], ...p], s) }));
  p.forEach((v, i) => svg.append(el("circle", { class: "point", r: 3, cx: s.sx(fx[i]), cy: s.sy(v), "data-step": i + 1,
    "data-value": v, "data-lo": lo ? lo[i] : "", "data-hi": hi ? hi[i] : "" })));
  svg.dataset.horizon = H;
}

function drawBars(pred) {
  const box = $("#bars"); box.replaceChildren();
  const entries = Object.entries(pred.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [cls, p] of entries) {
    const row = el("div", { class: "bar-row" + (cls === pred.label ? " top" : ""), "data-class": cls, "data-prob": p });
    const track = el("div", { class: "bar-track" }), bar = el("div", { class: "bar" });
    bar.style.width = (100 * p).toFixed(3) + "%";
    track.append(bar);
    row.append(el("span", {}, cls), track, el("span", {}, (100 * p).toFixed(1) + "%"));
    box.append(row);
  }
}

function drawScores(out) {
  const svg = $("#chart"); svg.replaceChildren();
  const xs = out.scores.map((_, i) => i), ys = out.scores;
  const s = scale(svg, xs, out.threshold != null ? [...ys, out.threshold] : ys);
  if (out.threshold != null)
    svg.append(el("line", { class: "threshold", x1: s.sx(0), x2: s.sx(xs.length - 1), y1: s.sy(out.threshold), y2: s.sy(out.threshold) }));
  svg.append(el("polyline", { class: "score", points: pts(xs, ys, s) }));
  out.flags.forEach((f, i) => { if (f) svg.append(el("circle", { class: "flag", r: 3, cx: s.sx(i), cy: s.sy(ys[i]), "data-step": i, "data-value": ys[i] })); });
}

function drawRoll(out) {
  const svg = $("#roll"); svg.replaceChildren();
  const w = svg.clientWidth || 900, h = svg.clientHeight || 360;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const cw = w / out.frames, ch = h / out.keys;
  Object.assign(svg.dataset, { frames: out.frames, keys: out.keys, cw, ch });
  for (const [t, p] of out.notes)
    svg.append(el("rect", { class: "note", x: t * cw, y: h - (p + 1) * ch, width: Math.max(cw - 0.5, 0.5), height: Math.max(ch, 1), "data-t": t, "data-p": p }));
}

async function streamText(run) {
  showError();
  const out = $("#output"); out.textContent = "";
  $("#state").textContent = "generating…";
  const r = await fetch(`/runs/${run.name}/generate`, { method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ prompt: $("#prompt").value, length: +$("#length").value,
      temperature: +$("#temperature").value, seed: +$("#seed").value, stream: true }) });
  if (!r.ok) { const b = await r.json(); throw new Error(`${r.status}: ${b.detail}`); }
  const reader = r.body.getReader(), dec = new TextDecoder();
  let buf = "", pieces = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let k;
    while ((k = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, k); buf = buf.slice(k + 2);
      const data = JSON.parse(ev.slice(ev.indexOf("data: ") + 6));
      if (ev.startsWith("event: done")) { window.grukit.last = data; $("#state").textContent = `done: ${pieces} pieces`; }
      else if (ev.startsWith("event: error")) throw new Error(data.detail);
      else { out.textContent += data.text; pieces++; }
    }
  }
}

async function streamAudio(run) {
  showError();
  const file = $("#file").files[0];
  if (!file) throw new Error("choose an audio file first");
  const rate = run.inputs.sample_rate;
  const decoded = await new AudioContext().decodeAudioData(await file.arrayBuffer());
  const off = new OfflineAudioContext(1, Math.ceil(decoded.duration * rate), rate);
  const src = off.createBufferSource(); src.buffer = decoded; src.connect(off.destination); src.start();
  const samples = (await off.startRendering()).getChannelData(0);
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/runs/${run.name}/stream` + (token() ? `?token=${encodeURIComponent(token())}` : ""));
  ws.binaryType = "arraybuffer";
  const replies = [];
  let wake = null;
  ws.onmessage = m => { replies.push(JSON.parse(m.data)); if (wake) { wake(); wake = null; } };
  const next = () => replies.length ? Promise.resolve(replies.shift()) : new Promise(r => { wake = r; }).then(() => replies.shift());
  await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = () => bad(new Error("WebSocket failed")); });
  const hello = await next();
  if (hello.error) throw new Error(hello.error);
  const step = Math.round(rate / 10);
  for (let i = 0; i < samples.length; i += step) {
    ws.send(samples.slice(i, i + step).buffer);
    const m = await next();
    if (m.error) throw new Error(m.error);
    $("#partial").textContent = m.partial.text;
  }
  ws.send(JSON.stringify({ end: true }));
  const fin = await next();
  window.grukit.last = fin;
  $("#transcript").textContent = fin.final.text;
  ws.close();
}

// ---------------------------------------------------------------- routing
async function load() {
  $("#token").value = token();
  $("#token").onchange = e => { localStorage.setItem("grukit-token", e.target.value); load(); };
  try {
    RUNS = await api("/runs");
    $("#status").textContent = "";
  } catch (e) { RUNS = []; $("#status").textContent = "cannot list runs: " + e.message; }
  const tbody = $("#runs-table tbody"); tbody.replaceChildren();
  const nav = $("#runs-nav"); nav.replaceChildren();
  for (const r of RUNS) {
    const tr = el("tr", { "data-run": r.name });
    const a = el("a", { href: `#/run/${encodeURIComponent(r.name)}` }, r.name);
    const td = el("td"); td.append(a);
    tr.append(td, el("td", {}, r.task), el("td", {}, r.routes.join(", ")), el("td", {}, r.streaming ? "yes" : "no"));
    tbody.append(tr);
    nav.append(el("a", { href: `#/run/${encodeURIComponent(r.name)}` }, r.name));
  }
  route();
}
function route() {
  const m = location.hash.match(/^#\/run\/(.+)$/);
  const run = m && RUNS.find(r => r.name === decodeURIComponent(m[1]));
  $("#home").hidden = !!run; $("#panel").hidden = !run;
  showError();
  if (!run) return;
  $("#panel-title").textContent = `${run.name}: ${run.task}`;
  $("#panel-info").textContent = Object.entries(run.inputs).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : v}`).join(" · ");
  PANELS[run.task](run, $("#panel-body"));
  document.body.dataset.ready = run.name;
}
window.addEventListener("hashchange", route);
load();

// kqv serve: the page. Plain JavaScript, no libraries; every number shown comes from the JSON API.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, text) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
};
const SVG = "http://www.w3.org/2000/svg";
const svg = (tag, attrs = {}) => {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};

// Which token sequence each kind of attention reads on its query and key sides.
const SIDES = {
  self: ["text", "text"], encoder: ["source", "source"], decoder: ["target", "target"], cross: ["target", "source"],
};
const SEQ_NAMES = { text: "text", source: "source", target: "target" };

const state = {
  models: [], model: null, attention: null, kind: null, layer: 0, head: 0, hover: null,
  text: "", target: null, generating: null,
};

// --- colour: viridis, the same map as the PNGs of `kqv inspect`
const VIRIDIS = [
  [68, 1, 84], [72, 36, 117], [65, 68, 135], [53, 95, 141], [42, 120, 142], [33, 145, 140],
  [34, 168, 132], [68, 191, 112], [122, 209, 81], [189, 223, 38], [253, 231, 37],
];
function colour(v) {
  const x = Math.min(1, Math.max(0, v)) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - i;
  const c = VIRIDIS[i].map((a, j) => Math.round(a + f * (VIRIDIS[i + 1][j] - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
const textColour = (v) => (v > 0.55 ? "#111" : "#fff");

// --- talking to the server

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = err.message || String(err);
}

const status = (text) => { $("status").textContent = text; };
const currentModel = () => state.models.find((m) => m.id === state.model);
const isTranslation = () => currentModel() && currentModel().family === "translation";

// --- start

async function start() {
  const answer = await api("/api/models");
  state.models = answer.models;
  const select = $("model");
  for (const m of state.models) select.append(el("option", { value: m.id }, `${m.id} (${m.family})`));
  $("text").value = answer.example;
  $("text").maxLength = answer.max_text_chars;
  select.addEventListener("change", () => { chooseModel(select.value); look(); });
  $("look").addEventListener("click", look);
  $("text").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); look(); } });
  $("kind").addEventListener("change", () => { state.kind = $("kind").value; fillLayerHead(); renderAttention(); });
  $("layer").addEventListener("change", () => { state.layer = Number($("layer").value); renderAttention(); });
  $("head").addEventListener("change", () => { state.head = Number($("head").value); renderAttention(); });
  for (const id of ["temperature", "top-k", "top-p"]) $(id).addEventListener("input", scheduleNext);
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", () => state.generating && state.generating.abort());
  chooseModel(state.models[0].id);
  await look();
}

function chooseModel(id) {
  state.model = id;
  $("model").value = id;
  const m = currentModel();
  const layers = Object.entries(m.layers).map(([k, n]) => `${n} ${k === "self" ? "" : k + " "}layers`).join(", ");
  $("model-info").textContent =
    `${m.family} · ${layers} · ${m.n_head} heads · ${m.max_tokens} tokens max · ${m.tokenizer} tokens, ` +
    `vocabulary ${m.vocab_size} · ${(m.parameters / 1e6).toFixed(2)}M parameters`;
  $("target-row").hidden = m.family !== "translation";
  $("text-hint").textContent = m.family === "translation" ? "(the source sentence)" : "";
  $("max-new").value = m.family === "translation" ? 60 : 100;
  const kind = $("kind");
  kind.replaceChildren(...m.kinds.map((k) => el("option", { value: k }, k)));
  state.kind = m.kinds.includes("cross") ? "cross" : m.kinds[0];
  kind.value = state.kind;
  state.layer = 0; state.head = 0; state.hover = null;
}

function fillLayerHead() {
  const m = currentModel();
  const nLayers = m.layers[state.kind];
  state.layer = Math.min(state.layer, nLayers - 1);
  $("layer").replaceChildren(...Array.from({ length: nLayers }, (_, i) => el("option", { value: i }, i)));
  $("head").replaceChildren(...Array.from({ length: m.n_head }, (_, i) => el("option", { value: i }, i)));
  $("layer").value = state.layer;
  $("head").value = state.head;
}

async function look() {
  showError(null);
  state.text = $("text").value;
  state.target = isTranslation() && $("target").value.trim() ? $("target").value : null;
  status("reading…");
  try {
    const t0 = performance.now();
    const body = { model: state.model, text: state.text };
    if (state.target !== null) body.target = state.target;
    state.attention = await api("/api/attention", body);
    state.hover = null;
    fillLayerHead();
    renderTokens();
    renderAttention();
    status(`${Math.round(performance.now() - t0)} ms`);
    if (state.attention.target !== null && state.target === null) {
      $("target").placeholder = state.attention.target;
    }
    updateNext();
    loadShapes();
  } catch (err) {
    status("");
    showError(err);
  }
}

// --- tokens

function sequences() {
  const a = state.attention.attention;
  if (state.attention.family === "gpt") return { text: a.self.query_tokens };
  return { source: a.encoder.query_tokens, target: a.decoder.query_tokens };
}

function renderTokens() {
  const box = $("tokens");
  box.replaceChildren();
  const seqs = sequences();
  for (const [name, tokens] of Object.entries(seqs)) {
    const row = el("div", { class: "seq", "data-seq": name });
    if (Object.keys(seqs).length > 1) row.append(el("span", { class: "seq-label" }, SEQ_NAMES[name]));
    tokens.forEach((t, i) => {
      const chip = el("span", { class: "chip", "data-seq": name, "data-index": i, title: `${name} token ${i}: ${JSON.stringify(t.text)}` });
      chip.append(el("span", { class: "tok" }, t.label), el("span", { class: "by" }));
      chip.addEventListener("mouseenter", () => hoverToken(name, i));
      chip.addEventListener("mouseleave", () => hoverToken(null));
      row.append(chip);
    });
    box.append(row);
  }
}

// --- attention

function currentMaps() { return state.attention.attention[state.kind]; }
function currentPattern() {
  const maps = currentMaps();
  return maps.patterns[maps.layers.indexOf(state.layer)][maps.heads.indexOf(state.head)];
}

function renderAttention() {
  if (!state.attention) return;
  const maps = currentMaps();
  const masked = maps.allowed.some((row) => row.some((ok) => !ok));
  $("mask-note").textContent = masked
    ? `mask: ${maps.mask} — hatched cells are hidden from the query and hold exactly 0`
    : `mask: ${maps.mask} — every query sees every key`;
  renderHeatmap(maps, currentPattern());
  renderLines(maps, currentPattern());
  renderGrid(maps);
  applyHover();
}

function renderHeatmap(maps, P) {
  const Tq = maps.query_tokens.length, Tk = maps.key_tokens.length;
  const size = Math.max(6, Math.min(26, Math.floor(620 / Math.max(Tq, Tk))));
  const box = $("heatmap");
  box.style.gridTemplateColumns = `max-content repeat(${Tk}, ${size}px)`;
  box.style.gridAutoRows = `${size}px`;
  box.style.fontSize = `${Math.max(8, Math.min(12, size - 2))}px`;
  const parts = [el("div", { class: "corner" })];
  maps.key_tokens.forEach((t, k) => {
    const label = el("div", { class: "klabel", "data-k": k, title: `key ${k}: ${JSON.stringify(t.text)}` }, t.label);
    label.addEventListener("mouseenter", () => setHover({ q: null, k }));
    label.addEventListener("mouseleave", () => setHover(null));
    parts.push(label);
  });
  const labelRowHeight = Math.min(90, 8 * Math.max(...maps.key_tokens.map((t) => t.label.length), 1) + 8);
  box.style.gridTemplateRows = `${labelRowHeight}px`;
  P.forEach((row, q) => {
    const label = el("div", { class: "qlabel", "data-q": q, title: `query ${q}: ${JSON.stringify(maps.query_tokens[q].text)}` },
      maps.query_tokens[q].label);
    label.addEventListener("mouseenter", () => setHover({ q, k: null }));
    label.addEventListener("mouseleave", () => setHover(null));
    parts.push(label);
    row.forEach((v, k) => {
      const allowed = maps.allowed[q][k];
      const cell = el("div", { class: allowed ? "cell" : "cell masked", role: "gridcell", "data-q": q, "data-k": k, "data-value": String(v) });
      if (allowed) cell.style.background = colour(v);
      cell.addEventListener("mouseenter", () => {
        const qt = maps.query_tokens[q].label, kt = maps.key_tokens[k].label;
        $("cell-info").textContent = allowed
          ? `query ${q} “${qt}” → key ${k} “${kt}”: ${v.toFixed(4)}`
          : `query ${q} “${qt}” may not see key ${k} “${kt}” (${maps.mask} mask)`;
        setHover({ q, k, cell: true });
      });
      cell.addEventListener("mouseleave", () => setHover(null));
      parts.push(cell);
    });
  });
  box.replaceChildren(...parts);
  const legend = $("legend");
  const stops = Array.from({ length: 11 }, (_, i) => colour(i / 10)).join(",");
  legend.replaceChildren(el("span", {}, "0"), el("span", { class: "ramp" }), el("span", {}, "1"));
  legend.querySelector(".ramp").style.background = `linear-gradient(to right, ${stops})`;
  if (maps.allowed.some((r) => r.some((ok) => !ok))) legend.append(el("span", { class: "swatch" }), el("span", {}, "masked"));
}

function renderLines(maps, P) {
  const Tq = maps.query_tokens.length, Tk = maps.key_tokens.length;
  const rowH = Math.max(11, Math.min(18, Math.floor(560 / Math.max(Tq, Tk))));
  const width = 360, labelW = 110, x0 = labelW + 4, x1 = width - labelW - 4;
  const height = Math.max(Tq, Tk) * rowH + 6;
  const box = $("lines");
  box.setAttribute("width", width);
  box.setAttribute("height", height);
  box.setAttribute("viewBox", `0 0 ${width} ${height}`);
  box.replaceChildren();
  const y = (i) => i * rowH + rowH / 2 + 3;
  const group = svg("g", { class: "edges" });
  P.forEach((row, q) => row.forEach((v, k) => {
    if (v < 0.01) return;
    const line = svg("line", { x1: x0, y1: y(q), x2: x1, y2: y(k), stroke: "#3b5bdb", "stroke-width": 2,
      "stroke-opacity": v, "data-q": q, "data-k": k, "data-value": v });
    group.append(line);
  }));
  box.append(group);
  maps.query_tokens.forEach((t, q) => {
    const text = svg("text", { x: labelW, y: y(q) + 4, "text-anchor": "end", "data-q": q });
    text.textContent = t.label;
    text.addEventListener("mouseenter", () => setHover({ q, k: null }));
    text.addEventListener("mouseleave", () => setHover(null));
    box.append(text);
  });
  maps.key_tokens.forEach((t, k) => {
    const text = svg("text", { x: width - labelW, y: y(k) + 4, "data-k": k });
    text.textContent = t.label;
    text.addEventListener("mouseenter", () => setHover({ q: null, k }));
    text.addEventListener("mouseleave", () => setHover(null));
    box.append(text);
  });
}

function renderGrid(maps) {
  const box = $("grid");
  const nh = maps.heads.length;
  box.style.gridTemplateColumns = `max-content repeat(${nh}, max-content)`;
  const parts = [];
  maps.layers.forEach((layer, li) => {
    parts.push(el("div", { class: "rowhead" }, `layer ${layer}`));
    maps.heads.forEach((head, hi) => {
      const P = maps.patterns[li][hi];
      const Tq = P.length, Tk = P[0].length;
      const canvas = el("canvas", { width: Tk, height: Tq, "aria-label": `layer ${layer} head ${head}` });
      const ctx = canvas.getContext("2d");
      const image = ctx.createImageData(Tk, Tq);
      P.forEach((row, q) => row.forEach((v, k) => {
        const rgb = maps.allowed[q][k] ? colour(v).slice(4, -1).split(",").map(Number) : [208, 208, 208];
        image.data.set([...rgb, 255], (q * Tk + k) * 4);
      }));
      ctx.putImageData(image, 0, 0);
      const cellClass = layer === state.layer && head === state.head ? "mini selected" : "mini";
      const mini = el("div", { class: cellClass, "data-layer": layer, "data-head": head, title: `layer ${layer}, head ${head}` });
      mini.append(canvas, el("span", {}, `${layer}.${head}`));
      mini.addEventListener("click", () => {
        state.layer = layer; state.head = head;
        $("layer").value = layer; $("head").value = head;
        renderAttention();
      });
      parts.push(mini);
    });
  });
  box.replaceChildren(...parts);
}

// --- hovering: what a token attends to (its row) and what attends to it (its column)

function hoverToken(seq, index) {
  if (seq === null) return setHover(null);
  const [qSeq, kSeq] = SIDES[state.kind];
  setHover({ q: qSeq === seq ? index : null, k: kSeq === seq ? index : null, seq, index });
}

function setHover(hover) {
  state.hover = hover;
  applyHover();
}

function applyHover() {
  if (!state.attention) return;
  const maps = currentMaps(), P = currentPattern(), h = state.hover;
  const [qSeq, kSeq] = SIDES[state.kind];
  const q = h ? h.q : null, k = h ? h.k : null;
  // heatmap: the hovered row and column
  for (const node of $("heatmap").children) {
    const nq = node.dataset.q === undefined ? null : Number(node.dataset.q);
    const nk = node.dataset.k === undefined ? null : Number(node.dataset.k);
    const inRow = q !== null && nq === q, inCol = k !== null && nk === k;
    if (node.classList.contains("cell")) {
      node.classList.toggle("hl", inRow || inCol);
      node.classList.toggle("hit", !!(h && h.cell && inRow && inCol));
    } else {
      node.classList.toggle("on", (nq !== null && nq === q) || (nk !== null && nk === k));
    }
  }
  // lines: only the hovered token's
  for (const line of $("lines").querySelectorAll("line")) {
    const lq = Number(line.dataset.q), lk = Number(line.dataset.k), v = Number(line.dataset.value);
    const show = !h || (q !== null && lq === q) || (k !== null && lk === k);
    line.setAttribute("stroke-opacity", show ? (h ? Math.max(v, 0.08) : v) : 0);
  }
  for (const text of $("lines").querySelectorAll("text")) {
    const on = (text.dataset.q !== undefined && Number(text.dataset.q) === q) ||
      (text.dataset.k !== undefined && Number(text.dataset.k) === k);
    text.classList.toggle("on", on);
  }
  // token chips: colour = what the hovered query attends to; bar = how much each query attends to the hovered key
  for (const chip of $("tokens").querySelectorAll(".chip")) {
    const seq = chip.dataset.seq, i = Number(chip.dataset.index);
    const tok = chip.querySelector(".tok"), by = chip.querySelector(".by");
    chip.classList.toggle("hovered", !!(h && h.seq === seq && h.index === i));
    delete chip.dataset.attn; delete chip.dataset.attendedBy;
    tok.style.background = ""; tok.style.color = ""; by.style.transform = "scaleX(0)";
    if (q !== null && seq === kSeq) {
      const v = P[q][i];
      chip.dataset.attn = String(v);
      if (maps.allowed[q][i]) { tok.style.background = colour(v); tok.style.color = textColour(v); }
    }
    if (k !== null && seq === qSeq) {
      const v = P[i][k];
      chip.dataset.attendedBy = String(v);
      by.style.transform = `scaleX(${v})`;
    }
  }
  $("hover-info").textContent = h ? describe(maps, P, q, k) : "";
}

function describe(maps, P, q, k) {
  const top = (pairs) => pairs.filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]).slice(0, 4)
    .map(([t, v]) => `${t} ${v.toFixed(2)}`).join(" · ");
  const where = `layer ${state.layer}, head ${state.head}`;
  const parts = [];
  if (q !== null) parts.push(`“${maps.query_tokens[q].label}” attends to: ` + top(P[q].map((v, j) => [maps.key_tokens[j].label, v])));
  if (k !== null) parts.push(`attended to by: ` + top(P.map((row, i) => [maps.query_tokens[i].label, row[k]])));
  return `${where} — ${parts.join("  |  ")}`;
}

// --- next token

let nextTimer = null;
function scheduleNext() {
  $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
  $("top-p-value").textContent = Number($("top-p").value).toFixed(2);
  clearTimeout(nextTimer);
  nextTimer = setTimeout(updateNext, 60);
}

function sampling() {
  const topK = Number($("top-k").value), topP = Number($("top-p").value);
  return {
    temperature: Number($("temperature").value),
    top_k: topK >= 1 ? topK : null,
    top_p: topP < 1 ? topP : null,
  };
}

let nextRequest = 0;
async function updateNext() {
  if (!state.attention) return;
  const ticket = ++nextRequest;
  const body = { model: state.model, text: state.text, show: 15, ...sampling() };
  if (isTranslation() && state.target !== null) body.target = state.target;
  try {
    const answer = await api("/api/next-token", body);
    if (ticket !== nextRequest) return; // a newer slider position has been asked for
    renderBars(answer);
  } catch (err) {
    showError(err);
  }
}

const percent = (p) => (p === 0 ? "0" : p < 0.001 ? "<0.1%" : `${(100 * p).toFixed(1)}%`);

function renderBars(answer) {
  const box = $("bars");
  const parts = [];
  const max = Math.max(...answer.tokens.map((t) => Math.max(t.prob, t.raw)), 1e-9);
  for (const t of answer.tokens) {
    const track = el("div", { class: "track" });
    const bar = el("div", { class: "bar" }), raw = el("div", { class: "raw" });
    bar.style.width = `${(100 * t.prob) / max}%`;
    raw.style.width = `${(100 * t.raw) / max}%`;
    track.append(bar, raw);
    const row = el("div", { class: t.prob > 0 ? "bar-row" : "bar-row dropped", "data-token": t.id, "data-prob": t.prob, "data-raw": t.raw });
    row.style.display = "contents";
    row.append(el("span", { class: "label" }, t.label), track, el("span", { class: "pct", title: `model's own: ${percent(t.raw)}` }, percent(t.prob)));
    parts.push(row);
  }
  box.replaceChildren(...parts);
  const s = answer.settings;
  box.dataset.settings = JSON.stringify([s.temperature, s.top_k, s.top_p]); // what these bars were computed with
  $("next-summary").textContent = `${answer.kept} of ${answer.vocab_size} tokens can be drawn · entropy ${answer.entropy.toFixed(3)} nats` +
    (s.temperature === 0 ? " · temperature 0: always the most likely token" : "");
}

// --- generation (a stream of JSON lines)

async function generate() {
  showError(null);
  const out = $("generated");
  const controller = new AbortController();
  state.generating = controller;
  $("generate").disabled = true; $("stop").disabled = false;
  out.replaceChildren();
  if (!isTranslation()) out.append(el("span", { class: "prompt" }, state.text || $("text").value));
  $("generate-info").textContent = "generating…";
  const seed = $("seed").value === "" ? null : Number($("seed").value);
  const body = { model: state.model, text: state.text || $("text").value, max_new_tokens: Number($("max-new").value), seed, ...sampling() };
  try {
    const response = await fetch("/api/generate", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      throw new Error(data.error || `${response.status} ${response.statusText}`);
    }
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = JSON.parse(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
        if (line.done) {
          if (line.rest) out.append(el("span", { class: "new" }, line.rest));
          $("generate-info").textContent = `${line.tokens} tokens · ${line.tokens_per_s} tokens/s`;
        } else {
          out.append(el("span", { class: "new", "data-token": line.token, title: line.label }, line.text));
          out.scrollTop = out.scrollHeight;
        }
      }
    }
  } catch (err) {
    if (err.name === "AbortError") $("generate-info").textContent = "stopped";
    else { showError(err); $("generate-info").textContent = ""; }
  } finally {
    state.generating = null;
    $("generate").disabled = false; $("stop").disabled = true;
  }
}

// --- shapes

async function loadShapes() {
  try {
    const e = await api("/api/explain", { model: state.model, text: state.text });
    const notation = el("table");
    notation.append(el("tr"));
    notation.firstChild.append(el("th", {}, "symbol"), el("th", {}, "value"), el("th", {}, "meaning"));
    for (const [symbol, row] of Object.entries(e.notation)) {
      const tr = el("tr");
      tr.append(el("td", { class: "name" }, symbol), el("td", {}, String(row.value)), el("td", {}, row.meaning));
      notation.append(tr);
    }
    const tensors = el("table", { id: "tensor-table" });
    const head = el("tr");
    head.append(el("th", {}, "tensor"), el("th", {}, "shape"), el("th", {}, "what it holds"));
    tensors.append(head);
    for (const t of e.tensors) {
      const tr = el("tr");
      tr.append(el("td", { class: "name" }, t.name), el("td", { class: "shape" }, `(${t.shape.join(", ")})`), el("td", {}, t.meaning));
      tensors.append(tr);
    }
    const wrap = el("div", { class: "shapes-wrap" });
    wrap.append(tensors);
    $("shapes").replaceChildren(
      el("p", { class: "small" }, `${e.total_parameters.toLocaleString("en")} parameters · ${e.tensors.length} tensors in one forward pass`),
      notation, el("h3", {}, "Every tensor"), wrap);
  } catch (err) {
    $("shapes").textContent = `shapes unavailable: ${err.message}`;
  }
}

start().catch(showError);

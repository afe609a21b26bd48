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
  startWhy();
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
  $("why-result").hidden = true; // an answer about another model's prediction
  showWhyError(null);
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
      chip.addEventListener("mouseenter", () => { hoverToken(name, i); pickWhyQuery(name, i); });
      chip.addEventListener("click", () => pickWhyQuery(name, i));
      chip.addEventListener("mouseleave", () => hoverToken(null));
      row.append(chip);
    });
    box.append(row);
  }
  fillWhyQuery();
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

// kqv serve: the "why" views — one prediction explained by every method of `kqv why`, side by side.
// Plain JavaScript, loaded before explorer.js; its functions read the page's state (explorer.js) when called.
// Every cell, bar and token drawn here carries the API's own number in data-value (and a title for people).

const WHY_METHODS = ["lens", "dla", "patch", "rollout", "grad", "heads"];
const whyState = { picked: null, answer: null, ticket: 0 };

// --- colour: sequential (viridis, colour() of explorer.js) for shares and probabilities, diverging for signed values
const NEGATIVE = [33, 102, 172], POSITIVE = [178, 24, 43];
function diverging(v) { // v in [-1, 1]: blue … white … red
  const x = Math.max(-1, Math.min(1, Number.isFinite(v) ? v : 0));
  const end = x < 0 ? NEGATIVE : POSITIVE, f = Math.abs(x);
  const c = end.map((a) => Math.round(255 + f * (a - 255)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
const divergingText = (v) => (Math.abs(v) > 0.6 ? "#fff" : "#111");
const fmt = (v) => (v === null || v === undefined ? "—" : Math.abs(v) >= 100 || v === 0 ? v.toFixed(0) : v.toPrecision(3));
const maxAbs = (values) => Math.max(...values.map((v) => Math.abs(v) || 0), 1e-12);

// --- the query: the token last hovered or clicked in the token strip, or the default

function whyQuerySeq() { return isTranslation() ? "target" : "text"; }

function fillWhyQuery() {
  const select = $("why-query");
  const tokens = state.attention ? sequences()[whyQuerySeq()] || [] : [];
  const last = isTranslation() ? "the default output token" : "the last token";
  const options = [el("option", { value: "" }, `${last} (default)`)];
  tokens.forEach((t, i) => options.push(el("option", { value: i }, `${i} · ${t.label}`)));
  select.replaceChildren(...options);
  whyState.picked = null;
  select.value = "";
}

function pickWhyQuery(seq, index) { // called by the token strip on hover and click
  if (seq !== whyQuerySeq()) return;
  whyState.picked = index;
  $("why-query").value = String(index);
}

// --- asking

function whyBody() {
  const body = { model: state.model, text: state.text };
  const query = $("why-query").value;
  if (query !== "") body.query_index = Number(query);
  for (const [id, field] of [["why-target", "target"], ["why-other", "other"], ["why-corrupt", "corrupt"]]) {
    const value = $(id).value.trim();
    if (value) body[field] = value;
  }
  const methods = WHY_METHODS.filter((m) => $(`why-method-${m}`).checked);
  if (methods.length !== WHY_METHODS.length) body.methods = methods;
  if (isTranslation() && state.target !== null) body.translation = state.target;
  return body;
}

function showWhyError(err) {
  const box = $("why-error");
  box.hidden = !err;
  box.textContent = err ? err.message || String(err) : "";
}

async function why() {
  if ($("text").value !== state.text || !state.attention) await look(); // the tokens the query names
  if (!state.attention) return; // look() has shown why not
  const ticket = ++whyState.ticket;
  const body = whyBody();
  showWhyError(null);
  $("why-status").textContent = "asking every method…";
  $("why-go").disabled = true;
  const t0 = performance.now();
  try {
    const answer = await api("/api/why", body);
    if (ticket !== whyState.ticket) return;
    whyState.answer = answer;
    renderWhy(answer, body.methods || WHY_METHODS);
    $("why-result").dataset.request = JSON.stringify(body); // what these views were computed for
    $("why-status").textContent = `${Math.round(performance.now() - t0)} ms`;
  } catch (err) {
    if (ticket !== whyState.ticket) return;
    $("why-status").textContent = "";
    $("why-result").hidden = true;
    showWhyError(err);
  } finally {
    if (ticket === whyState.ticket) $("why-go").disabled = false;
  }
}

// --- what an answer holds, for either family: the same views over different tokens

function whyViews(a, asked) {
  const r = a.results;
  if (a.family === "translation") {
    const s = r.source, t = a.position;
    const shading = s ? [["cross-attention", s.cross[t], false], ["rollout", s.rollout[t], false],
      ["grad×input", s.grad_x_input[t], true], ["integrated gradients", s.integrated[t], true]] : [];
    const grids = r.patch ? [
      { id: "why-patch-encoder", title: "encoder stream patched at one source token (layer × source position)",
        rows: r.patch.encoder.map((_, i) => `enc ${i}`), cols: a.source_tokens, values: r.patch.encoder, kind: "pos" },
      { id: "why-patch-heads", title: "one cross-attention head patched (decoder layer × head)",
        rows: r.patch.cross_heads.map((_, i) => `dec ${i}`), cols: r.patch.cross_heads[0].map((_, h) => `h${h}`),
        values: r.patch.cross_heads, kind: "head" },
    ] : [];
    return { lensTokens: a.target_tokens, lensQuery: t, shadeTokens: a.source_tokens, shadeQuery: null, shading, grids,
      ablations: [], patchOff: !r.patch && asked.includes("patch"), noun: "source" };
  }
  const shading = [];
  if (r.rollout) shading.push(["rollout", r.rollout.final[a.position], false]);
  if (r.grad) {
    for (const name of ["grad×input", "integrated gradients"]) if (r.grad[name]) shading.push([name, r.grad[name].scores, true]);
  }
  const grids = r.patch ? [
    { id: "why-patch-resid", title: "residual stream patched into block i at one position (layer × position)",
      rows: r.patch.resid.map((_, i) => `L${i}`), cols: a.tokens, values: r.patch.resid, kind: "pos", query: a.position },
    { id: "why-patch-heads", title: "one head's output patched at every position (layer × head)",
      rows: r.patch.heads.map((_, i) => `L${i}`), cols: r.patch.heads[0].map((_, h) => `H${h}`), values: r.patch.heads, kind: "head" },
    { id: "why-patch-mlp", title: "one MLP's output patched at one position (layer × position)",
      rows: r.patch.mlp.map((_, i) => `L${i}`), cols: a.tokens, values: r.patch.mlp, kind: "pos", query: a.position },
  ] : [];
  return { lensTokens: a.tokens, lensQuery: a.position, shadeTokens: a.tokens, shadeQuery: a.position, shading, grids,
    ablations: ["ablation", "zero_ablation", "mean_ablation"].filter((k) => r[k]).map((k) => [k, r[k]]),
    patchOff: !r.patch && asked.includes("patch"), noun: "text" };
}

// --- drawing

function renderWhy(a, asked = WHY_METHODS) {
  const v = whyViews(a, asked);
  renderWhyQuestion(a);
  renderWhyAnswers(a);
  renderLens(a, v);
  renderPatching(a, v);
  renderDla(a);
  renderShading(a, v);
  $("why-result").hidden = false;
}

function emphasised(text) { // "… on *pizza* (token 1)" -> text nodes and <em>, never HTML
  const parts = text.split("*");
  return parts.map((p, i) => (i % 2 ? el("em", {}, p) : document.createTextNode(p)));
}

function renderWhyQuestion(a) {
  const tokens = a.family === "translation" ? a.target_tokens : a.tokens;
  const p = $("why-question");
  p.replaceChildren();
  p.append(`At ${a.family === "translation" ? "output position" : "token"} ${a.position} “${tokens[a.position]}”: why `,
    el("strong", { "data-token": a.target.id }, a.target.label), " rather than ",
    el("strong", { "data-token": a.other.id }, a.other.label), "?");
  p.append(el("span", { class: "muted small" }, ` ${a.how}${a.corrupted ? ` · corrupted: “${a.corrupted}”` : ""}`));
}

function renderWhyAnswers(a) {
  const list = $("why-answers");
  list.replaceChildren(...a.answers.map((line) => {
    const li = el("li", { "data-method": line.method, title: line.method });
    if (line.token !== null) li.dataset.token = line.token;
    if (line.score !== null) li.dataset.value = String(line.score);
    li.append(...emphasised(line.summary));
    return li;
  }));
  const g = a.agreement, box = $("why-agreement");
  box.replaceChildren();
  if (g.word === null || g.word === undefined) box.textContent = "No method points at one input word.";
  else {
    if (Number.isInteger(g.token)) box.dataset.token = g.token;
    box.append("Agreement: ", el("em", {}, g.word), `${Number.isInteger(g.token) ? ` (token ${g.token})` : ""} by ${g.agree.join(", ")}`,
      g.disagree.length ? `; ${g.disagree.join(", ")} point${g.disagree.length === 1 ? "s" : ""} elsewhere` : "; no method disagrees");
  }
  $("why-notes").replaceChildren(...a.notes.map((n) => el("li", {}, n)));
}

function renderLens(a, v) {
  const box = $("why-lens");
  const lens = a.results.lens;
  if (!lens) { box.replaceChildren(el("p", { class: "muted small" }, "lens not asked for")); return; }
  const byTarget = !!lens.target_prob;
  const table = el("table", { id: "why-lens-table", class: "why-table" });
  const head = el("tr");
  head.append(el("th", { class: "corner" }, "row \\ position"));
  v.lensTokens.forEach((t, i) => head.append(el("th", { class: i === v.lensQuery ? "tok query" : "tok", "data-pos": i, title: `position ${i}` }, t)));
  table.append(head);
  lens.rows.forEach((row, r) => {
    const tr = el("tr");
    tr.append(el("th", { class: "rowname" }, row));
    v.lensTokens.forEach((_, t) => {
      const top = lens.top_tokens[r][t][0], p = lens.top_probs[r][t][0];
      const value = byTarget ? lens.target_prob[r][t] : p;
      const cell = el("td", {
        class: t === v.lensQuery ? "lens-cell query" : "lens-cell", "data-row": r, "data-pos": t, "data-value": String(value),
        "data-token": lens.top_ids[r][t][0], "data-top": top, "data-prob": String(p),
      }, top);
      if (lens.target_rank) cell.dataset.rank = lens.target_rank[r][t];
      const rest = lens.top_tokens[r][t].map((x, k) => `${x} ${fmt(lens.top_probs[r][t][k])}`).join(", ");
      cell.title = `${row}, position ${t} “${v.lensTokens[t]}”: top ${rest}` +
        (byTarget ? ` · P(“${a.target.label}”) = ${fmt(value)}` : "") + (lens.target_rank ? `, rank ${lens.target_rank[r][t]}` : "");
      cell.style.background = colour(value);
      cell.style.color = textColour(value);
      tr.append(cell);
    });
    table.append(tr);
  });
  const legend = el("div", { class: "why-legend small muted" });
  const ramp = el("span", { class: "ramp" });
  ramp.style.background = `linear-gradient(to right, ${Array.from({ length: 11 }, (_, i) => colour(i / 10)).join(",")})`;
  legend.append(`each cell: the top next token read from that row at that position · colour: ${byTarget ? `P(“${a.target.label}”)` : "its probability"} `, "0", ramp, "1");
  const wrap = el("div", { class: "why-scroll" });
  wrap.append(table);
  box.replaceChildren(wrap, legend);
}

function divergingGrid(spec) { // one heatmap: rows × cols of signed values, white at 0
  const scale = Math.max(1, maxAbs(spec.values.flat()));
  const grid = el("div", { id: spec.id, class: "why-grid", role: "grid", "data-scale": String(scale) });
  grid.style.gridTemplateColumns = `max-content repeat(${spec.cols.length}, minmax(14px, 1fr))`;
  grid.append(el("div", { class: "corner" }));
  spec.cols.forEach((c, j) => grid.append(el("div", { class: j === spec.query ? "col query" : "col", title: `${j}: ${c}` }, c)));
  spec.values.forEach((row, i) => {
    grid.append(el("div", { class: "rowname" }, spec.rows[i]));
    row.forEach((value, j) => {
      const attrs = { class: "pcell", role: "gridcell", "data-layer": i, "data-value": String(value) };
      attrs[spec.kind === "head" ? "data-head" : "data-pos"] = j;
      const cell = el("div", attrs);
      cell.title = `${spec.rows[i]}, ${spec.kind === "head" ? "head" : "position"} ${j} “${spec.cols[j]}”: ${fmt(value)}${spec.what || " restored"}`;
      cell.style.background = diverging(value / scale);
      grid.append(cell);
    });
  });
  const figure = el("figure", { class: "why-fig" });
  figure.append(el("figcaption", {}, spec.title), grid);
  return figure;
}

function renderPatching(a, v) {
  const box = $("why-patch");
  const parts = [];
  if (v.patchOff) {
    parts.push(el("p", { id: "why-patch-note", class: "note" },
      `Activation patching needs a corrupted ${v.noun}: give Corrupt as WORD=WORD with a replacement of the same token length (e.g. pizza=cakes on a character model).`));
  }
  if (a.results.patch) {
    const p = a.results.patch;
    const clean = p.clean ?? p.clean_value, corrupted = p.corrupted ?? p.corrupted_value;
    parts.push(el("p", { class: "small muted" },
      `logit difference “${a.target.label}” − “${a.other.label}”: clean ${fmt(clean)}, corrupted ${fmt(corrupted)}; ` +
      "each cell: the fraction of it the clean activation restores in the corrupted run (1 = all, 0 = none; red > 0, blue < 0)"));
  }
  const figs = el("div", { class: "why-figs" });
  figs.append(...v.grids.map(divergingGrid));
  for (const [key, ab] of v.ablations) {
    const change = ab.values.map((row) => row.map((x) => x - ab.clean));
    const fig = divergingGrid({ id: `why-${key.replace("_", "-")}`, title: `each head ${ab.how}-ablated: the logit difference (clean ${fmt(ab.clean)})`,
      rows: ab.values.map((_, i) => `L${i}`), cols: ab.values[0].map((_, h) => `H${h}`), values: ab.values, kind: "head", what: "" });
    const scale = Math.max(1e-12, maxAbs(change.flat()));
    fig.querySelectorAll(".pcell").forEach((cell) => { // coloured by the change, which is what matters
      const d = change[Number(cell.dataset.layer)][Number(cell.dataset.head)];
      cell.dataset.change = String(d);
      cell.style.background = diverging(d / scale);
      cell.title += ` (change ${d >= 0 ? "+" : ""}${fmt(d)})`;
    });
    figs.append(fig);
  }
  parts.push(figs);
  box.replaceChildren(...parts);
}

function renderDla(a) {
  const box = $("why-dla");
  const d = a.results.dla;
  if (!d) {
    box.replaceChildren(el("p", { class: "muted small" }, a.family === "translation"
      ? "direct logit attribution is written for the GPT" : "dla not asked for"));
    return;
  }
  const scale = maxAbs(d.values);
  const bars = el("div", { id: "why-dla-bars" });
  d.labels.forEach((label, i) => {
    const value = d.values[i];
    const row = el("div", { class: value >= 0 ? "dla-bar pos" : "dla-bar neg", "data-label": label, "data-value": String(value),
      title: `${label}: ${value >= 0 ? "+" : ""}${fmt(value)} of the logit difference` });
    const track = el("div", { class: "track" }), bar = el("div", { class: "bar" });
    const w = (50 * Math.abs(value)) / scale;
    bar.style.width = `${w}%`;
    bar.style.left = value >= 0 ? "50%" : `${50 - w}%`;
    track.append(el("div", { class: "zero" }), bar);
    row.append(el("span", { class: "label" }, label), track, el("span", { class: "num" }, `${value >= 0 ? "+" : ""}${fmt(value)}`));
    bars.append(row);
  });
  box.replaceChildren(el("p", { class: "small muted" },
    `each part's direct share of the logit difference “${a.target.label}” − “${a.other.label}”: sum ${fmt(d.total)}, the model's ${fmt(d.model_value)} (red pushes towards “${a.target.label}”)`), bars);
}

function renderShading(a, v) {
  const box = $("why-shading");
  if (!v.shading.length) { box.replaceChildren(el("p", { class: "muted small" }, "rollout and grad not asked for")); return; }
  const rows = v.shading.map(([method, scores, signed]) => {
    const row = el("div", { class: "shade-row", "data-method": method });
    row.append(el("span", { class: "shade-name" }, method));
    const scale = maxAbs(scores);
    const tokens = el("span", { class: "shade-tokens" });
    v.shadeTokens.forEach((t, i) => {
      const value = scores[i];
      const span = el("span", { class: i === v.shadeQuery ? "shade-tok query" : "shade-tok", "data-index": i, "data-value": String(value),
        title: `${v.noun} token ${i} “${t}”: ${fmt(value)}${i === v.shadeQuery ? " (the query)" : ""}` }, t);
      span.style.background = signed ? diverging(value / scale) : colour(value / scale);
      span.style.color = signed ? divergingText(value / scale) : textColour(value / scale);
      tokens.append(span);
    });
    row.append(tokens);
    return row;
  });
  box.replaceChildren(el("p", { class: "small muted" },
    "each token shaded by its score, scaled to the row's largest: rollout (the query's stream) in viridis, gradients red > 0 > blue"), ...rows);
}

function startWhy() {
  $("why-go").addEventListener("click", why);
  for (const id of ["why-target", "why-other", "why-corrupt"]) {
    $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); why(); } });
  }
}

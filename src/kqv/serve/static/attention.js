// kqv serve: drawing attention — the heatmap, the query-to-key lines, every head's small map, and the hover.
// Plain JavaScript, loaded before explorer.js; its functions read the page's state (explorer.js) when called.

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

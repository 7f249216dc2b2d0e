// embedserve playground: plain JavaScript, no build step, nothing loaded from outside this server.
// Every text a user typed goes into the page through textContent or SVG text nodes, never as HTML.
"use strict";

(() => {
  // The API lives beside the page: "/playground" → "/", "/prefix/playground" → "/prefix/".
  const BASE = new URL(".", window.location.href);
  const KEY_STORAGE = "embedserve.apiKey";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TIMING_HEADERS = [
    "server-timing", "x-total-time", "x-queue-time", "x-inference-time", "x-tokenization-time",
    "x-compute-time", "x-process-time", "x-response-time",
  ];
  const state = { models: [], hasCohereRerank: false, redraw: {} };

  // ---- small DOM helpers -------------------------------------------------------------------
  const $ = (selector, root = document) => root.querySelector(selector);

  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return el;
  }

  function s(tag, attrs = {}, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.setAttribute("class", value);
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
  }

  const fmt = (x, digits = 3) => (Number.isFinite(x) ? x.toFixed(digits) : String(x));
  const lines = (text) => text.split("\n").map((t) => t.trim()).filter((t) => t.length > 0);
  const truncate = (text, n) => (text.length > n ? text.slice(0, n - 1) + "…" : text);

  // ---- the API key: session storage only --------------------------------------------------
  function apiKey() {
    try {
      return window.sessionStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return $("#api-key").value;
    }
  }

  function setupKey() {
    const input = $("#api-key");
    try {
      input.value = window.sessionStorage.getItem(KEY_STORAGE) || "";
    } catch {
      /* storage off: the field still works for this page view */
    }
    input.addEventListener("input", () => {
      try {
        if (input.value) window.sessionStorage.setItem(KEY_STORAGE, input.value);
        else window.sessionStorage.removeItem(KEY_STORAGE);
      } catch {
        /* ignore */
      }
    });
    $("#key-form").addEventListener("submit", (event) => event.preventDefault());
    $("#api-key-forget").addEventListener("click", () => {
      input.value = "";
      input.dispatchEvent(new Event("input"));
      input.focus();
    });
  }

  // ---- calling the API ----------------------------------------------------------------------
  class ApiError extends Error {
    constructor(message, call) {
      super(message);
      this.call = call;
    }
  }

  /** The server's own words for an error, whatever its dialect's envelope looks like. */
  function errorMessage(status, statusText, data, text) {
    let message = null;
    if (data && typeof data === "object") {
      const err = data.error;
      if (err && typeof err === "object" && typeof err.message === "string") message = err.message; // OpenAI
      else if (typeof err === "string") message = err; // TEI
      else if (typeof data.message === "string") message = data.message; // Cohere, Jina
      else if (typeof data.detail === "string") message = data.detail; // FastAPI's default
      else if (Array.isArray(data.detail) && data.detail.length) message = data.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    }
    if (!message) message = (text || "").trim().slice(0, 500) || "(empty response)";
    let out = `${status} ${statusText || ""}`.trim() + ": " + message;
    if (status === 401 || status === 403) out += " — set the API key at the top of the page.";
    return out;
  }

  function serverTiming(headers) {
    const found = [];
    for (const name of TIMING_HEADERS) {
      const value = headers.get(name);
      if (value) found.push(`${name}: ${/^\d+(\.\d+)?$/.test(value) ? value + " ms" : value}`);
    }
    return found;
  }

  async function call(method, path, body) {
    const url = new URL(path, BASE).href;
    const headers = {};
    const payload = body === undefined ? undefined : JSON.stringify(body);
    if (payload !== undefined) headers["Content-Type"] = "application/json";
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    const info = { method, path, url, body, payload, auth: Boolean(key) };
    const started = performance.now();
    let response;
    let text;
    try {
      response = await fetch(url, { method, headers, body: payload, cache: "no-store" });
      text = await response.text();
    } catch (err) {
      throw new ApiError(`Could not reach the server (${err.message}). Is it still running?`, info);
    }
    info.ms = performance.now() - started;
    info.status = response.status;
    info.statusText = response.statusText;
    info.timing = serverTiming(response.headers);
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    info.data = data;
    if (!response.ok) throw new ApiError(errorMessage(response.status, response.statusText, data, text), info);
    if (data === null) throw new ApiError(`${response.status}: the server's answer is not JSON`, info);
    return info;
  }

  // ---- snippets: the exact request as curl, and the same call from Python ----------------------
  const shellQuote = (text) => "'" + text.replace(/'/g, "'\\''") + "'";

  function curlSnippet(c) {
    const parts = [`curl -s ${c.method === "GET" ? "" : "-X " + c.method + " "}${shellQuote(c.url)}`];
    if (c.payload !== undefined) parts.push("-H 'Content-Type: application/json'");
    if (c.auth) parts.push('-H "Authorization: Bearer $EMBEDSERVE_API_KEY"');
    if (c.payload !== undefined) parts.push(`-d ${shellQuote(c.payload)}`);
    return parts.join(" \\\n  ");
  }

  /** A JSON value as a Python literal (JSON strings are valid Python strings). */
  function py(value, indent = 0) {
    const pad = " ".repeat(indent);
    if (value === null || value === undefined) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
    if (Array.isArray(value)) {
      if (!value.length) return "[]";
      const inner = value.map((v) => `${pad}    ${py(v, indent + 4)},`);
      const flat = `[${value.map((v) => py(v, indent)).join(", ")}]`;
      return flat.length + indent <= 88 ? flat : `[\n${inner.join("\n")}\n${pad}]`;
    }
    const entries = Object.entries(value);
    if (!entries.length) return "{}";
    const flat = `{${entries.map(([k, v]) => `${JSON.stringify(k)}: ${py(v, indent)}`).join(", ")}}`;
    if (flat.length + indent <= 88) return flat;
    return `{\n${entries.map(([k, v]) => `${pad}    ${JSON.stringify(k)}: ${py(v, indent + 4)},`).join("\n")}\n${pad}}`;
  }

  function requestsSnippet(c, after) {
    const out = c.auth ? ["import os", "", "import requests", ""] : ["import requests", ""];
    const args = [`    ${JSON.stringify(c.url)},`];
    if (c.body !== undefined) args.push(`    json=${py(c.body, 4)},`);
    if (c.auth) args.push('    headers={"Authorization": f"Bearer {os.environ[\'EMBEDSERVE_API_KEY\']}"},');
    args.push("    timeout=120,");
    out.push(`response = requests.${c.method.toLowerCase()}(`, ...args, ")", "response.raise_for_status()");
    out.push(...(after || ["print(response.json())"]));
    return out.join("\n");
  }

  const apiKeyPy = 'os.environ.get("EMBEDSERVE_API_KEY", "unused")';

  function openaiSnippet(c) {
    const base = new URL("api/v1", BASE).href;
    return [
      "import os",
      "",
      "from openai import OpenAI",
      "",
      `client = OpenAI(base_url=${JSON.stringify(base)}, api_key=${apiKeyPy})`,
      "response = client.embeddings.create(",
      `    model=${py(c.body.model)},`,
      `    input=${py(c.body.input, 4)},`,
      ")",
      "vectors = [item.embedding for item in response.data]",
      'print(len(vectors), "vectors of", len(vectors[0]), "dimensions")',
    ].join("\n");
  }

  function cohereSnippet(c) {
    const base = BASE.href.replace(/\/$/, "");
    return [
      "import os",
      "",
      "import cohere",
      "",
      `co = cohere.ClientV2(api_key=${apiKeyPy}, base_url=${JSON.stringify(base)})`,
      "response = co.rerank(",
      `    model=${py(c.body.model)},`,
      `    query=${py(c.body.query, 4)},`,
      `    documents=${py(c.body.documents, 4)},`,
      ")",
      "for result in response.results:",
      "    print(result.index, result.relevance_score)",
    ].join("\n");
  }

  /** Fill a panel's request box: what was sent, the status, the latency, and the snippets. */
  function showRequest(panel, c, snippets) {
    const box = $(".request", panel);
    box.replaceChildren();
    if (!c) return;
    const status = c.status === undefined ? "no answer" : `${c.status} ${c.statusText || ""}`.trim();
    const latency = c.ms === undefined ? "" : ` in ${Math.round(c.ms)} ms (measured in the browser)`;
    const timing = c.timing && c.timing.length ? `; server reported ${c.timing.join(", ")}` : "";
    box.append(
      h("p", { class: "meta", "data-role": "latency" }, h("code", {}, `${c.method} ${new URL(c.url).pathname}`), ` → ${status}${latency}${timing}`),
    );
    const list = [["curl", "curl", curlSnippet(c)], ...snippets];
    box.append(h("div", { class: "snippets" }, list.map(([kind, label, code]) => snippetBlock(kind, label, code))));
  }

  function snippetBlock(kind, label, code) {
    const pre = h("pre", { tabindex: "0", "aria-label": `${label} snippet` }, h("code", {}, code));
    const note = h("span", { class: "copied", role: "status" });
    const copy = h("button", { type: "button", class: "copy", onclick: () => copyText(code, pre, note) }, `Copy ${label}`);
    return h("figure", { class: "snippet", "data-snippet": kind }, h("figcaption", {}, h("span", {}, label), copy, note), pre);
  }

  async function copyText(text, pre, note) {
    try {
      await navigator.clipboard.writeText(text);
      note.textContent = "Copied";
    } catch {
      // Clipboard API off (plain http on a remote host): select the text for Ctrl+C instead.
      const range = document.createRange();
      range.selectNodeContents(pre);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      note.textContent = "Selected: press Ctrl+C";
    }
    window.setTimeout(() => (note.textContent = ""), 2500);
  }

  function showError(panel, message) {
    const box = $(".error", panel);
    if (!message) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.textContent = message;
    box.hidden = false;
  }

  /** Run a panel's action: busy state, errors in the panel, the request shown either way. */
  async function run(panel, action) {
    const button = $("button[type=submit]", panel);
    showError(panel, null);
    panel.setAttribute("aria-busy", "true");
    if (button) button.disabled = true;
    try {
      await action();
    } catch (err) {
      const output = $(".output", panel);
      if (output) output.replaceChildren(); // no stale result under an error
      if (err instanceof ApiError) {
        showError(panel, err.message);
        showRequest(panel, err.call, []);
      } else {
        showError(panel, `The page failed: ${err && err.message ? err.message : err}`);
        console.error(err);
      }
    } finally {
      panel.removeAttribute("aria-busy");
      if (button) button.disabled = false;
    }
  }

  // ---- models -------------------------------------------------------------------------------
  async function loadModels() {
    const panel = $("#models");
    await run(panel, async () => {
      const c = await call("GET", "api/v1/models");
      state.models = Array.isArray(c.data.models) ? c.data.models : [];
      renderModels();
      fillModelChoices();
      showRequest(panel, c, [["python", "Python (requests)", requestsSnippet(c, modelsAfter)]]);
    });
  }

  const modelsAfter = ['for model in response.json()["models"]:', '    print(model["id"], model["type"], model["state"])'];

  function renderModels() {
    const body = $("#models-table tbody");
    body.replaceChildren();
    if (!state.models.length) {
      body.append(h("tr", {}, h("td", { colspan: "7", class: "muted" }, "The catalogue has no models.")));
      return;
    }
    for (const m of state.models) {
      const ready = m.state === "ready";
      const loadBtn = h("button", { type: "button", "data-action": "load", disabled: ready, onclick: () => lifecycle(m.id, "load") }, "Load");
      const unloadBtn = h("button", { type: "button", "data-action": "unload", disabled: !ready, onclick: () => lifecycle(m.id, "unload") }, "Unload");
      loadBtn.setAttribute("aria-label", `Load ${m.id}`);
      unloadBtn.setAttribute("aria-label", `Unload ${m.id}`);
      const stateCell = h("span", { class: `state state-${m.state}` }, m.state);
      const idCell = h(
        "td",
        { "data-label": "Model" },
        h("strong", {}, m.id),
        h("div", { class: "muted small" }, m.name),
        m.description ? h("div", { class: "small description" }, m.description) : null,
        m.error ? h("div", { class: "small bad" }, m.error) : null,
      );
      body.append(
        h(
          "tr",
          { "data-model": m.id },
          idCell,
          h("td", { "data-label": "Type", "data-field": "type" }, m.type),
          h("td", { "data-label": "Engine", "data-field": "engine" }, m.engine),
          h("td", { "data-label": "State", "data-field": "state" }, stateCell),
          h("td", { "data-label": "Dimension", "data-field": "dimension" }, m.dimension === null || m.dimension === undefined ? "–" : String(m.dimension)),
          h("td", { "data-label": "Max tokens", "data-field": "max_length" }, m.max_length === null || m.max_length === undefined ? "–" : String(m.max_length)),
          h("td", { "data-label": "Actions", class: "buttons" }, loadBtn, unloadBtn),
        ),
      );
    }
  }

  async function lifecycle(id, action) {
    const panel = $("#models");
    const row = $(`tr[data-model="${CSS.escape(id)}"]`, panel);
    if (row) {
      for (const b of row.querySelectorAll("button")) b.disabled = true;
      $("[data-field=state]", row).replaceChildren(h("span", { class: "state state-loading" }, action === "load" ? "loading…" : "unloading…"));
    }
    await run(panel, async () => {
      let c;
      try {
        c = await call("POST", `api/v1/models/${encodeURIComponent(id)}/${action}`);
      } finally {
        const list = await call("GET", "api/v1/models").catch(() => null);
        if (list) state.models = list.data.models;
        renderModels();
      }
      showRequest(panel, c, [["python", "Python (requests)", requestsSnippet(c, ['print(response.json()["state"])'])]]);
      const button = $(`tr[data-model="${CSS.escape(id)}"] button[data-action=${action === "load" ? "unload" : "load"}]`, panel);
      if (button) button.focus();
    });
  }

  function fillModelChoices() {
    const kinds = { dense: "embeddings", sparse: "sparse-embeddings", rerank: "rerank", multi: "multi-vector" };
    for (const [panel, type] of Object.entries(kinds)) {
      // a model's own type first, then those that also serve this type (a bge-m3 model serves three)
      const own = state.models.filter((m) => m.type === type);
      const also = state.models.filter((m) => m.type !== type && Array.isArray(m.serves) && m.serves.includes(type));
      const ids = own.concat(also).map((m) => m.id);
      $(`#${panel}-models`).replaceChildren(...ids.map((id) => h("option", { value: id })));
      const input = $(`#${panel}-model`);
      if (!input.value && ids.length) input.value = ids[0];
    }
  }

  // ---- dense: the cosine heatmap ------------------------------------------------------------
  function cosineMatrix(vectors) {
    const norms = vectors.map((v) => Math.sqrt(v.reduce((acc, x) => acc + x * x, 0)) || 1);
    return vectors.map((a, i) =>
      vectors.map((b, j) => {
        let dot = 0;
        for (let k = 0; k < a.length; k++) dot += a[k] * b[k];
        return dot / (norms[i] * norms[j]);
      }),
    );
  }

  /** Sequential blue for 0..1, orange for negative values. */
  function heatColor(value) {
    const v = Math.max(-1, Math.min(1, value));
    const mix = (a, b, t) => Math.round(a + (b - a) * t);
    const [lo, hi] = v >= 0 ? [[247, 251, 255], [8, 48, 107]] : [[247, 251, 255], [166, 54, 3]];
    const t = Math.abs(v);
    return `rgb(${mix(lo[0], hi[0], t)}, ${mix(lo[1], hi[1], t)}, ${mix(lo[2], hi[2], t)})`;
  }

  async function runDense(event) {
    event.preventDefault();
    const panel = $("#dense");
    await run(panel, async () => {
      const texts = lines($("#dense-texts").value);
      const body = { model: $("#dense-model").value.trim(), input: texts, encoding_format: "float" };
      const c = await call("POST", "api/v1/embeddings", body);
      const vectors = c.data.data.slice().sort((a, b) => a.index - b.index).map((d) => d.embedding);
      const matrix = cosineMatrix(vectors);
      state.redraw.dense = () => renderHeatmap(texts, matrix, c.data, vectors[0] ? vectors[0].length : 0);
      state.redraw.dense();
      showRequest(panel, c, [["python", "Python (openai)", openaiSnippet(c)]]);
    });
  }

  function nearestPair(matrix) {
    let best = null;
    for (let i = 0; i < matrix.length; i++) {
      for (let j = i + 1; j < matrix.length; j++) {
        if (!best || matrix[i][j] > best.value) best = { i, j, value: matrix[i][j] };
      }
    }
    return best;
  }

  function renderHeatmap(texts, matrix, response, dims) {
    const out = $("#dense-output");
    const n = texts.length;
    const width = Math.max(240, out.clientWidth || 600);
    const label = 28;
    const cell = Math.max(22, Math.min(72, Math.floor((Math.min(width, 640) - label - 4) / Math.max(n, 1))));
    const size = label + cell * n + 2;
    const pair = nearestPair(matrix);
    const readout = h("p", { class: "readout", id: "dense-readout", "aria-live": "polite" }, "Hover over or focus a cell to read its value.");
    const describe = (i, j) => `${i + 1} “${truncate(texts[i], 60)}” × ${j + 1} “${truncate(texts[j], 60)}”: cosine ${fmt(matrix[i][j])}`;
    const svg = s("svg", {
      class: "heatmap", width: size, height: size, viewBox: `0 0 ${size} ${size}`, role: "group",
      "aria-label": `Cosine similarity of ${n} texts`,
    });
    for (let i = 0; i < n; i++) {
      const mid = label + i * cell + cell / 2;
      svg.append(s("text", { x: mid, y: label - 8, "text-anchor": "middle", class: "axis" }, String(i + 1)));
      svg.append(s("text", { x: label - 8, y: mid + 4, "text-anchor": "end", class: "axis" }, String(i + 1)));
    }
    const cells = [];
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const value = matrix[i][j];
        const diagonal = i === j;
        const nearest = pair && ((i === pair.i && j === pair.j) || (i === pair.j && j === pair.i));
        const g = s("g", {
          class: `cell${diagonal ? " diagonal" : ""}${nearest ? " nearest" : ""}`, tabindex: "0", role: "img",
          "data-i": i, "data-j": j, "data-value": value, "aria-label": describe(i, j),
        });
        g.append(
          s("title", {}, describe(i, j)),
          s("rect", {
            x: label + j * cell + 1, y: label + i * cell + 1, width: cell - 2, height: cell - 2, rx: 3,
            fill: diagonal ? "#e5e7eb" : heatColor(value),
          }),
        );
        if (cell >= 34) {
          const dark = !diagonal && value > 0.55;
          g.append(s("text", {
            x: label + j * cell + cell / 2, y: label + i * cell + cell / 2 + 4, "text-anchor": "middle",
            class: `value${dark ? " on-dark" : ""}`,
          }, fmt(value, 2)));
        }
        const show = () => {
          readout.textContent = describe(i, j);
          for (const other of cells) other.classList.toggle("active", other === g);
        };
        g.addEventListener("mouseenter", show);
        g.addEventListener("focus", show);
        cells.push(g);
        svg.append(g);
      }
    }
    if (pair) {
      for (const [i, j] of [[pair.i, pair.j], [pair.j, pair.i]]) {
        svg.append(s("rect", {
          x: label + j * cell, y: label + i * cell, width: cell, height: cell, rx: 4,
          class: "nearest-outline", fill: "none", "pointer-events": "none",
        }));
      }
    }
    const legend = h("ol", { class: "legend" }, texts.map((t, i) =>
      h("li", { class: pair && (i === pair.i || i === pair.j) ? "in-pair" : null }, t)));
    const summary = pair
      ? h("p", { class: "summary", "data-role": "nearest" }, "Nearest pair: ", h("strong", {}, `${pair.i + 1} and ${pair.j + 1}`),
          `, cosine ${fmt(pair.value)}.`)
      : h("p", { class: "summary" }, "Give at least two texts to compare.");
    const scale = h("p", { class: "muted small" },
      `${response.model}, ${dims} dimensions, ${response.usage ? response.usage.total_tokens : "?"} tokens. Cosine computed in the browser from the returned vectors; darker is closer.`);
    const table = h("details", {}, h("summary", {}, "The matrix as a table"),
      h("div", { class: "table-wrap" }, h("table", { class: "matrix" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, ""), texts.map((_, j) => h("th", { scope: "col" }, String(j + 1))))),
        h("tbody", {}, matrix.map((row, i) => h("tr", {}, h("th", { scope: "row" }, String(i + 1)), row.map((v) => h("td", {}, fmt(v)))))))));
    out.replaceChildren(summary, h("div", { class: "heatmap-row" }, h("div", { class: "chart" }, svg), legend), readout, scale, table);
  }

  // ---- sparse: term bars and the overlap ----------------------------------------------------
  function wordsOf(text) {
    return new Set(text.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter(Boolean));
  }

  /** True when a vocabulary term is (a piece of) one of the text's own words. */
  function inText(term, words) {
    const t = term.replace(/^##/, "").toLowerCase();
    if (!t) return false;
    for (const w of words) if (w === t || (term.startsWith("##") ? w.endsWith(t) : w.startsWith(t) && t.length >= 3)) return true;
    return false;
  }

  function termsOf(item) {
    const tokens = item.tokens || item.indices.map((i) => `#${i}`);
    return item.indices.map((index, k) => ({ index, term: tokens[k], weight: item.values[k] }));
  }

  async function runSparse(event) {
    event.preventDefault();
    const panel = $("#sparse");
    await run(panel, async () => {
      const a = $("#sparse-a").value.trim();
      const b = $("#sparse-b").value.trim();
      const top = Math.max(1, Math.min(200, parseInt($("#sparse-top").value, 10) || 20));
      const input = b ? [a, b] : [a];
      const body = { model: $("#sparse-model").value.trim(), input, options: { return_tokens: true } };
      const c = await call("POST", "api/v1/embed_sparse", body);
      const items = c.data.data.slice().sort((x, y) => x.index - y.index);
      state.redraw.sparse = () => renderSparse(input, items, top, c.data);
      state.redraw.sparse();
      const after = ['for item in response.json()["data"]:', '    top = sorted(zip(item["values"], item["tokens"]), reverse=True)[:10]', '    print(len(item["indices"]), "active dimensions:", top)'];
      showRequest(panel, c, [["python", "Python (requests)", requestsSnippet(c, after)]]);
    });
  }

  /** Horizontal bars: rows of {label, value, kind, detail}; drawn to the width of the container. */
  function barChart(rows, opts) {
    const width = Math.max(260, opts.width);
    const labelW = Math.min(150, Math.round(width * 0.32));
    const valueW = opts.valueWidth || 56;
    const row = 22;
    const max = Math.max(...rows.map((r) => r.value), 1e-9);
    const barSpace = width - labelW - valueW - 12;
    const svg = s("svg", {
      class: "bars", width, height: rows.length * row + 4, viewBox: `0 0 ${width} ${rows.length * row + 4}`,
      role: "img", "aria-label": opts.label,
    });
    rows.forEach((r, k) => {
      const y = k * row + 2;
      const w = Math.max(1, (r.value / max) * barSpace);
      svg.append(s("g", { class: `bar ${r.kind || ""}`, "data-term": r.label, "data-value": r.value },
        s("title", {}, r.detail || `${r.label}: ${fmt(r.value)}`),
        s("text", { x: labelW - 6, y: y + 15, "text-anchor": "end", class: "label" }, truncate(r.label, 22)),
        s("rect", { x: labelW, y: y + 3, width: w, height: row - 7, rx: 2 }),
        s("text", { x: labelW + w + 6, y: y + 15, class: "num" }, opts.format ? opts.format(r) : fmt(r.value, 2))));
    });
    return svg;
  }

  function renderSparse(texts, items, top, response) {
    const out = $("#sparse-output");
    const model = state.models.find((m) => m.id === response.model);
    const vocab = model && model.dimension ? ` of ${model.dimension.toLocaleString("en")}` : "";
    const both = items.length === 2;
    const width = both && out.clientWidth > 760 ? Math.floor(out.clientWidth / 2) - 12 : Math.max(260, out.clientWidth || 600);
    const blocks = items.map((item, k) => {
      const words = wordsOf(texts[k]);
      const terms = termsOf(item).sort((x, y) => y.weight - x.weight);
      const rows = terms.slice(0, top).map((t) => ({
        label: t.term, value: t.weight, kind: inText(t.term, words) ? "own" : "expansion",
        detail: `${t.term} (index ${t.index}): weight ${fmt(t.weight)}${inText(t.term, words) ? ", in the text" : ", an expansion"}`,
      }));
      const name = both ? `Text ${k === 0 ? "A" : "B"}` : "The text";
      return h("div", { class: "sparse-text", "data-text": k },
        h("h3", {}, name, ": ", h("q", {}, truncate(texts[k], 80))),
        h("p", { class: "summary" }, h("strong", { "data-role": "active" }, String(item.indices.length)),
          ` active dimensions${vocab}; the top ${rows.length} by weight:`),
        barChart(rows, { width, label: `Top ${rows.length} terms of ${name}` }));
    });
    const key = h("p", { class: "swatches small" }, h("span", { class: "swatch own" }), " a word of the text  ",
      h("span", { class: "swatch expansion" }), " an expansion the model added");
    const children = [key, h("div", { class: both ? "sparse-pair" : "" }, blocks)];
    if (both) children.push(renderOverlap(items, width * (out.clientWidth > 760 ? 2 : 1)));
    children.push(h("p", { class: "muted small" }, `${response.model}, ${response.usage ? response.usage.total_tokens : "?"} tokens.`));
    out.replaceChildren(...children);
  }

  function renderOverlap(items, width) {
    const [a, b] = items.map((item) => new Map(termsOf(item).map((t) => [t.index, t])));
    const shared = [];
    for (const [index, ta] of a) {
      const tb = b.get(index);
      if (tb) shared.push({ index, term: ta.term, wa: ta.weight, wb: tb.weight, product: ta.weight * tb.weight });
    }
    shared.sort((x, y) => y.product - x.product);
    const dot = shared.reduce((acc, t) => acc + t.product, 0);
    const block = h("div", { class: "overlap" }, h("h3", {}, "Shared terms and their share of the dot product"));
    block.append(h("p", { class: "summary" }, h("strong", { "data-role": "shared" }, String(shared.length)), " shared terms; dot product ",
      h("strong", { "data-role": "dot" }, fmt(dot)), shared.length ? "; each term adds weight A × weight B:" : ". The texts share no term."));
    if (shared.length) {
      const rows = shared.slice(0, 30).map((t) => ({
        label: t.term, value: t.product, kind: "shared",
        detail: `${t.term}: ${fmt(t.wa)} × ${fmt(t.wb)} = ${fmt(t.product)} (${fmt((100 * t.product) / dot, 1)}% of the dot product)`,
      }));
      block.append(barChart(rows, {
        width, label: "Contribution of each shared term to the dot product", valueWidth: 150,
        format: (r) => `${fmt(r.value, 2)} (${fmt((100 * r.value) / dot, 0)}%)`,
      }));
      if (shared.length > 30) block.append(h("p", { class: "muted small" }, `and ${shared.length - 30} more.`));
    }
    return block;
  }

  // ---- rerank -------------------------------------------------------------------------------
  async function runRerank(event) {
    event.preventDefault();
    const panel = $("#rerank");
    await run(panel, async () => {
      const documents = lines($("#rerank-docs").value);
      const body = { model: $("#rerank-model").value.trim(), query: $("#rerank-query").value.trim(), documents };
      const c = await call("POST", "api/v1/rerank", body);
      renderRerank(documents, c.data);
      const after = ['for result in response.json()["results"]:', '    print(result["index"], result["relevance_score"])'];
      const snippets = [["python", "Python (requests)", requestsSnippet(c, after)]];
      if (state.hasCohereRerank) snippets.push(["cohere", "Python (cohere)", cohereSnippet(c)]);
      showRequest(panel, c, snippets);
    });
  }

  function renderRerank(documents, response) {
    const out = $("#rerank-output");
    const results = response.results || [];
    const scores = results.map((r) => r.relevance_score);
    const lo = Math.min(0, ...scores);
    const hi = Math.max(lo + 1e-9, ...scores);
    const list = h("ol", { class: "ranked" }, results.map((r, rank) => {
      const frac = (r.relevance_score - lo) / (hi - lo);
      const moved = r.index - rank;
      const move = moved > 0 ? `↑${moved}` : moved < 0 ? `↓${-moved}` : "=";
      const text = r.document && typeof r.document.text === "string" ? r.document.text : documents[r.index];
      return h("li", { "data-index": r.index, "data-score": r.relevance_score },
        h("div", { class: "score" },
          s("svg", { width: 120, height: 14, viewBox: "0 0 120 14", "aria-hidden": "true", class: "scorebar" },
            s("rect", { x: 0, y: 2, width: 120, height: 10, rx: 2, class: "track" }),
            s("rect", { x: 0, y: 2, width: Math.max(1, frac * 120), height: 10, rx: 2, class: "fill" })),
          h("span", { class: "num" }, fmt(r.relevance_score))),
        h("div", { class: "doc" },
          h("span", { class: "was", title: "position in your list" }, `was #${r.index + 1} `, h("span", { class: "move" }, move)),
          " ", text));
    }));
    const model = state.models.find((m) => m.id === response.model);
    const note = model && model.engine === "similarity"
      ? " This model scores with the cosine of query and document embeddings, not a cross-encoder."
      : "";
    out.replaceChildren(
      h("p", { class: "summary" }, `${results.length} documents ranked by relevance score, highest first.`),
      list,
      h("p", { class: "muted small" }, `${response.model}, ${response.usage ? response.usage.total_tokens : "?"} tokens.${note}`),
    );
  }

  // ---- multi-vector: the MaxSim alignment ----------------------------------------------------
  async function runMulti(event) {
    event.preventDefault();
    const panel = $("#multi");
    await run(panel, async () => {
      const body = {
        model: $("#multi-model").value.trim(),
        query: $("#multi-query").value.trim(),
        document: $("#multi-document").value.trim(),
      };
      const c = await call("POST", "api/v1/multi_vector/align", body);
      renderAlignment(c.data);
      const after = [
        "body = response.json()",
        'for match in body["matches"]:',
        '    query_token = body["query_tokens"][match["query_index"]]',
        '    document_token = body["document_tokens"][match["document_index"]]',
        '    print(query_token, "->", document_token, round(match["similarity"], 3))',
      ];
      showRequest(panel, c, [["python", "Python (requests)", requestsSnippet(c, after)]]);
    });
  }

  function renderAlignment(r) {
    const out = $("#multi-output");
    const matches = r.matches || [];
    const hi = Math.max(1e-9, ...matches.map((m) => Math.abs(m.similarity)));
    const matchedBy = new Map();
    for (const m of matches) matchedBy.set(m.document_index, (matchedBy.get(m.document_index) || 0) + 1);
    const docTokens = r.document_tokens.map((token, j) => h("span", {
      class: matchedBy.has(j) ? "tok matched" : "tok",
      "data-j": j,
      title: matchedBy.has(j) ? `matched by ${matchedBy.get(j)} query token(s)` : "matched by no query token",
    }, token));
    const highlight = (j, on) => {
      const span = $(`#multi-output .doc-tokens [data-j="${j}"]`);
      if (span) span.classList.toggle("hl", on);
    };
    const rows = matches.map((m) => {
      const frac = Math.max(0, m.similarity) / hi;
      const row = h("tr", { class: "match", tabindex: "0", "data-q": m.query_index, "data-d": m.document_index, "data-sim": m.similarity },
        h("td", { class: "qtok" }, r.query_tokens[m.query_index]),
        h("td", { class: "dtok" }, r.document_tokens[m.document_index], h("span", { class: "muted small" }, ` #${m.document_index + 1}`)),
        h("td", { class: "score" },
          s("svg", { width: 100, height: 12, viewBox: "0 0 100 12", "aria-hidden": "true", class: "scorebar" },
            s("rect", { x: 0, y: 1, width: 100, height: 10, rx: 2, class: "track" }),
            s("rect", { x: 0, y: 1, width: Math.max(1, frac * 100), height: 10, rx: 2, class: "fill" })),
          h("span", { class: "num" }, ` ${fmt(m.similarity)}`)));
      for (const [name, on] of [["mouseenter", true], ["mouseleave", false], ["focus", true], ["blur", false]]) {
        row.addEventListener(name, () => highlight(m.document_index, on));
      }
      return row;
    });
    const how = r.similarity === "meanmaxsim" ? "mean" : "sum";
    out.replaceChildren(
      h("p", { class: "summary", "data-role": "score" },
        `MaxSim score ${fmt(r.score)}: the ${how} of the ${matches.length} query tokens' best similarities.`),
      h("p", { class: "doc-tokens", "aria-label": "Document tokens" }, docTokens),
      h("div", { class: "table-wrap" }, h("table", { class: "alignment" },
        h("caption", { class: "visually-hidden" }, "Each query token and the document token it matched"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Query token"), h("th", { scope: "col" }, "Matched document token"),
          h("th", { scope: "col" }, "Similarity"))),
        h("tbody", {}, rows))),
      h("p", { class: "muted small" }, `${r.model}, ${r.usage ? r.usage.total_tokens : "?"} tokens.`),
    );
  }

  // ---- start-up -----------------------------------------------------------------------------
  function showFatal(message) {
    const box = $("#fatal");
    box.textContent = `The page hit an error: ${message}. The API itself still answers; see /docs.`;
    box.hidden = false;
  }

  async function detectDialects() {
    try {
      const c = await call("GET", "openapi.json");
      state.hasCohereRerank = Boolean(c.data.paths && c.data.paths["/v2/rerank"]);
    } catch {
      state.hasCohereRerank = false;
    }
  }

  function submitOnCtrlEnter(textarea) {
    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        textarea.form.requestSubmit();
      }
    });
  }

  function start() {
    window.addEventListener("error", (event) => showFatal(event.message || "unknown error"));
    window.addEventListener("unhandledrejection", (event) => showFatal(String(event.reason && event.reason.message ? event.reason.message : event.reason)));
    setupKey();
    $("#models-refresh").addEventListener("click", loadModels);
    $("#dense-form").addEventListener("submit", runDense);
    $("#sparse-form").addEventListener("submit", runSparse);
    $("#rerank-form").addEventListener("submit", runRerank);
    $("#multi-form").addEventListener("submit", runMulti);
    submitOnCtrlEnter($("#dense-texts"));
    submitOnCtrlEnter($("#rerank-docs"));
    let resizeTimer = 0;
    window.addEventListener("resize", () => {
      window.clearTimeout(resizeTimer);
      resizeTimer = window.setTimeout(() => Object.values(state.redraw).forEach((draw) => draw()), 150);
    });
    document.documentElement.dataset.ready = "false";
    Promise.all([loadModels(), detectDialects()]).finally(() => {
      document.documentElement.dataset.ready = "true";
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

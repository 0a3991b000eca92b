// steerlab playground: plain JS over the server's own HTTP API (no build step, no dependencies).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, numLayers: 30, vectors: [], aborter: null, bandTouched: false };

function headers(json) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (response.status === 401) {
    $("key-box").open = true;
    $("api-key").focus();
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error.message; } catch (e) { /* keep the status line */ }
    throw new Error(message);
  }
  return response;
}

function setStatus(text) { $("status").textContent = text; }

// ------------------------------------------------------------------ model and vectors
async function loadModel() {
  const body = await (await api("/v1/models", { headers: headers(false) })).json();
  const card = body.data[0];
  state.model = card.id;
  state.numLayers = card.num_layers || 30;
  const last = state.numLayers - 1;
  for (const id of ["layer-from", "layer-to", "read-layer"]) $(id).max = String(last);
  // a middle band (10-16 on 30 layers), as the CLI suggests; a vector's calibrated layers replace it
  $("layer-from").value = String(Math.floor(state.numLayers / 3));
  $("layer-to").value = String(Math.max(Math.floor(state.numLayers / 3), Math.floor(state.numLayers * 11 / 20)));
  $("read-layer").value = String(Math.round(state.numLayers * 0.47));
  $("model-line").textContent = card.id + " · " + state.numLayers + " layers";
}

// The strength story: a vector's calibrated defaults (recorded by `steerlab calibrate`) are where the
// playground starts -- its strength on the slider, its layers in the band, and a slider range around
// that strength. Without them: 0, the middle band, and +-0.1 in the norm unit (useful values are a few
// hundredths of the typical residual norm; 0.5 on many layers wrecks the text).
function calibrated(vector) {
  const d = vector.defaults || {};
  return {
    strength: typeof d.strength === "number" ? d.strength : null,
    layers: Array.isArray(d.layers) && d.layers.length ? d.layers.map(Number) : null,
    unit: d.unit === "raw" ? "raw" : "norm",
  };
}

function strengthDefault(vector) {
  const c = calibrated(vector);
  return c.strength === null ? 0 : c.strength;
}

function sliderSpan(vector) {
  const c = calibrated(vector);
  const base = c.unit === "raw" ? 1 : 0.1;
  const span = c.strength === null ? base : Math.max(base, 2 * Math.abs(c.strength));
  return Number(span.toPrecision(2));
}

function useCalibratedBand(vector) {
  const layers = calibrated(vector).layers;
  if (!layers || state.bandTouched) return;
  $("layer-from").value = String(Math.min(...layers));
  $("layer-to").value = String(Math.max(...layers));
}

function renderVectors() {
  const list = $("vector-list");
  const previous = {};
  for (const li of list.children) {
    previous[li.dataset.name] = {
      on: li.querySelector("input[type=checkbox]").checked,
      value: li.querySelector("input[type=range]").value,
    };
  }
  list.replaceChildren();
  $("no-vectors").hidden = state.vectors.length > 0;
  state.vectors.forEach((vector, i) => {
    const li = document.createElement("li");
    li.dataset.name = vector.id;
    const check = document.createElement("input");
    check.type = "checkbox";
    check.id = "use-" + i;
    check.className = "use";
    const label = document.createElement("label");
    label.htmlFor = check.id;
    label.textContent = " " + vector.id + " ";
    const info = document.createElement("span");
    info.className = "hint";
    const c = calibrated(vector);
    info.textContent = vector.method + ", layers " + vector.layers[0] + "–" + vector.layers[vector.layers.length - 1]
      + (c.strength !== null || c.layers
        ? " · calibrated: " + (c.layers ? "layers " + Math.min(...c.layers) + "–" + Math.max(...c.layers) : "")
          + (c.strength !== null ? " strength " + c.strength : "")
        : " · not calibrated");
    const span = sliderSpan(vector);
    const slider = document.createElement("input");
    slider.type = "range";
    slider.id = "strength-" + i;
    slider.className = "strength";
    slider.min = String(-span);
    slider.max = String(span);
    slider.step = String(Number((span / 20).toPrecision(2)));
    slider.value = String(strengthDefault(vector));
    slider.dataset.unit = c.unit;
    slider.setAttribute("aria-label", "strength of " + vector.id + " (" + (c.unit === "raw"
      ? "times the stored direction)" : "multiple of the typical residual norm)"));
    const out = document.createElement("output");
    out.htmlFor = slider.id;
    const show = () => { out.textContent = "strength " + Number(slider.value).toFixed(span < 0.5 ? 3 : 2); };
    const choose = () => { check.checked = true; useCalibratedBand(vector); };
    slider.addEventListener("input", () => { show(); choose(); });
    check.addEventListener("change", () => { if (check.checked) useCalibratedBand(vector); });
    const old = previous[vector.id];
    if (old) { check.checked = old.on; slider.value = old.value; }
    show();
    li.append(check, label, info, slider, out);
    list.append(li);
  });
}

async function loadVectors() {
  const body = await (await api("/v1/steering/vectors", { headers: headers(false) })).json();
  state.vectors = body.data;
  renderVectors();
  const first = state.vectors.find((v) => calibrated(v).layers);
  if (first) useCalibratedBand(first);
}

async function upload() {
  const file = $("upload-file").files[0];
  if (!file) { $("upload-status").textContent = "Choose a file first."; return; }
  const form = new FormData();
  form.append("file", file);
  $("upload-status").textContent = "Uploading…";
  try {
    const entry = await (await api("/v1/steering/vectors", { method: "POST", body: form, headers: headers(false) })).json();
    $("upload-status").textContent = "Added as '" + entry.id + "'.";
    await loadVectors();
  } catch (e) {
    $("upload-status").textContent = "Upload refused: " + e.message;
  }
}

// ---------------------------------------------------------------------- generation
function chosenSteering() {
  const from = parseInt($("layer-from").value, 10);
  const to = parseInt($("layer-to").value, 10);
  const layers = from <= to ? from + "-" + to : to + "-" + from;
  const out = [];
  for (const li of $("vector-list").children) {
    if (!li.querySelector("input[type=checkbox]").checked) continue;
    const vector = state.vectors.find((v) => v.id === li.dataset.name) || {};
    const item = {
      vector: li.dataset.name,
      strength: Number(li.querySelector("input[type=range]").value),
      op: $("op").value,
      layers: layers,
      positions: $("positions").value,
      ...($("condition").value ? { condition: $("condition").value } : {}),
    };
    // band untouched and the vector is calibrated: omit layers, so the server uses exactly its recorded ones
    if (!state.bandTouched && calibrated(vector).layers) delete item.layers;
    out.push(item);
  }
  return out;
}

function requestBody(steering) {
  const body = {
    model: state.model,
    messages: [{ role: "user", content: $("prompt").value }],
    max_tokens: parseInt($("max-tokens").value, 10) || 48,
    temperature: Number($("temperature").value) || 0,
    seed: parseInt($("seed").value, 10) || 0,
    stream: true,
  };
  if (steering.length) body.steering = steering;
  return body;
}

async function streamInto(pane, body, signal) {
  pane.replaceChildren();
  pane.dataset.state = "streaming";
  pane.dataset.text = "";
  let text = "";
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST", headers: headers(true), body: JSON.stringify(body), signal,
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.steering_report) showFired(chunk.steering_report);
        for (const choice of chunk.choices || []) {
          const piece = (choice.delta && choice.delta.content) || "";
          if (piece) { text += piece; pane.textContent = text; }
        }
      }
    }
    pane.dataset.text = text;
    pane.dataset.state = "done";
  } catch (e) {
    pane.dataset.text = text;
    pane.dataset.state = "error";
    const err = document.createElement("span");
    err.className = "error";
    err.textContent = (text ? "\n" : "") + "[" + (e.name === "AbortError" ? "stopped" : e.message) + "]";
    pane.append(err);
  }
  return text;
}

async function projections(text, vector, steering) {
  const body = { vector: vector, text: text, prompt: $("prompt").value, layer: parseInt($("read-layer").value, 10) };
  if (steering.length) body.steering = steering;
  const response = await api("/v1/steering/projections", {
    method: "POST", headers: headers(true), body: JSON.stringify(body),
  });
  return response.json();
}

function median(values) {
  if (!values.length) return 0;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function colourPane(pane, tokens, center, scale) {
  pane.replaceChildren();
  for (const t of tokens) {
    const span = document.createElement("span");
    span.className = "tok";
    span.textContent = t.text;
    const d = (t.projection - center) / scale;
    const alpha = Math.min(Math.abs(d), 1) * 0.6;
    span.style.backgroundColor = d >= 0 ? `rgba(217, 72, 15, ${alpha})` : `rgba(26, 86, 184, ${alpha})`;
    span.title = "projection " + t.projection.toFixed(2);
    pane.append(span);
  }
  pane.dataset.coloured = "true";
}

async function colour(plainText, steeredText, steering) {
  if (!steering.length) return;
  const vector = steering[0].vector;
  const [plain, steered] = await Promise.all([
    projections(plainText, vector, []),
    projections(steeredText, vector, $("read-steered").checked ? steering : []),
  ]);
  const center = median(plain.tokens.map((t) => t.projection));
  const all = plain.tokens.concat(steered.tokens).map((t) => Math.abs(t.projection - center));
  const scale = Math.max(1e-6, ...all);
  colourPane($("pane-plain"), plain.tokens, center, scale);
  colourPane($("pane-steered"), steered.tokens, center, scale);
}

async function generate(event) {
  if (event) event.preventDefault();
  if (state.aborter) return;
  const steering = chosenSteering();
  state.aborter = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  setStatus(steering.length ? "Generating…" : "Generating (no vector chosen: both panes unsteered)…");
  try {
    const signal = state.aborter.signal;
    const [plain, steered] = await Promise.all([
      streamInto($("pane-plain"), requestBody([]), signal),
      streamInto($("pane-steered"), requestBody(steering), signal),
    ]);
    const ok = $("pane-plain").dataset.state === "done" && $("pane-steered").dataset.state === "done";
    if (ok) {
      setStatus("Colouring tokens…");
      await colour(plain, steered, steering);
    }
    setStatus(ok ? "Done." : "Stopped.");
  } catch (e) {
    setStatus("Error: " + e.message);
  } finally {
    state.aborter = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

function stop() { if (state.aborter) state.aborter.abort(); }

// ------------------------------------------------------------------------- wiring
$("controls").addEventListener("submit", generate);
$("stop").addEventListener("click", stop);
$("upload-btn").addEventListener("click", upload);
// once the user sets the band it is theirs: calibrated bands no longer replace it, and it is sent
for (const id of ["layer-from", "layer-to"]) $(id).addEventListener("input", () => { state.bandTouched = true; });
$("api-key").addEventListener("change", () => start());
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(e);
  if (e.key === "Escape") stop();
});

// ---------------------------------------------------------------------- conditions
async function loadConditions() {
  let data = [];
  try {
    const body = await (await api("/v1/steering/conditions", { headers: headers(false) })).json();
    data = (body && body.data) || [];
  } catch (e) {
    return; // conditions are optional: the rest of the playground works without them
  }
  const select = $("condition");
  for (const c of data) {
    const option = document.createElement("option");
    option.value = c.id;
    option.textContent = c.id + " (layer " + c.layer + ")";
    select.append(option);
  }
}

function showFired(report) {
  const fired = report.flatMap((r) => r.conditions.map((c) => c.fired));
  $("condition-fired").textContent = "Condition " + (fired.every(Boolean) ? "fired: steered." : "did not fire: not steered.");
}

async function start() {
  try {
    await loadModel();
    await loadVectors();
    await loadConditions();
    document.body.dataset.ready = "true";
  } catch (e) {
    $("model-line").textContent = "Cannot reach the server: " + e.message;
  }
}
start();

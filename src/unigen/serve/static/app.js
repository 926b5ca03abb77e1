// unigen serve: pick a run, stream its generation (server-sent events read through fetch), draw each step.
"use strict";
const $ = (id) => document.getElementById(id);
let runs = [], controller = null, frames = 0;

function setStatus(text, state) {
  const s = $("status");
  s.textContent = text;
  if (state) s.dataset.state = state;
  s.dataset.frames = String(frames);
}

async function loadRuns() {
  const res = await fetch("/api/runs");
  runs = (await res.json()).runs;
  const sel = $("run");
  sel.replaceChildren();
  for (const r of runs) {
    const o = new Option(r.error ? `${r.id} (${r.error})` : `${r.id}  ·  ${r.preset}`, r.id);
    o.disabled = Boolean(r.error) || r.samplers.length === 0;
    sel.add(o);
  }
  if (!runs.length) setStatus("No trained runs under the folders given to `unigen serve`.", "empty");
  const first = runs.find((r) => !r.error && r.samplers.length);
  if (first) sel.value = first.id;
  onRun();
}

function currentRun() { return runs.find((r) => r.id === $("run").value); }

function onRun() {
  const r = currentRun();
  const sel = $("sampler");
  sel.replaceChildren();
  if (!r || r.error) return;
  r.samplers.forEach((s) => sel.add(new Option(s, s)));
  $("steps").placeholder = r.steps ? String(r.steps) : "default";
  $("n").value = r.n;
  $("seed").value = r.seed;
  $("guidance").placeholder = String(r.guidance);
  $("prompt-label").hidden = !r.prompt;
  $("run-info").textContent = `${r.task} · data ${r.data}` + (r.streams ? " · streams every step" : " · shows the result");
}

function params() {
  const p = new URLSearchParams({ run: $("run").value, sampler: $("sampler").value });
  for (const k of ["steps", "n", "seed", "guidance"]) if ($(k).value !== "") p.set(k, $(k).value);
  if (currentRun()?.prompt && $("prompt").value) p.set("prompt", $("prompt").value);
  return p;
}

async function generate(ev) {
  ev.preventDefault();
  stop();
  controller = new AbortController();
  frames = 0;
  resetViews();
  setStatus("starting…", "running");
  $("go").disabled = true; $("stop").disabled = false;
  try {
    const res = await fetch(`/api/generate?${params()}`, { signal: controller.signal });
    if (!res.ok) {
      const body = await res.json().catch(() => ({ error: res.statusText }));
      return setStatus(`error ${res.status}: ${body.error}`, "error");
    }
    await readEvents(res.body.getReader(), handle);
    if ($("status").dataset.state === "running") setStatus("the server closed the stream", "error");
  } catch (e) {
    if (e.name !== "AbortError") setStatus(`error: ${e.message}`, "error");
  } finally {
    $("go").disabled = false; $("stop").disabled = true; controller = null;
  }
}

async function readEvents(reader, onMessage) {
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) onMessage(JSON.parse(data));
    }
  }
}

function stop() {
  if (controller) { controller.abort(); setStatus("stopped", "stopped"); }
}

function resetViews() {
  for (const id of ["image-view", "text-view", "final-view"]) $(id).hidden = true;
  $("text-canvas").replaceChildren();
  for (const id of ["img-xt", "img-x0", "img-final"]) $(id).removeAttribute("src");
}

function handle(m) {
  if (m.type === "queued") setStatus(`queued: ${m.ahead} generation(s) ahead`, "running");
  else if (m.type === "start") setStatus(`${m.preset} · ${m.sampler} · ${m.n} sample(s): starting`, "running");
  else if (m.type === "frame") { frames += 1; drawFrame(m); }
  else if (m.type === "done") drawDone(m);
  else if (m.type === "error") setStatus(`error: ${m.message}`, "error");
}

function drawFrame(m) {
  if (m.kind === "text") {
    $("text-view").hidden = false;
    drawText(m.rows, m.i);
    return setStatus(`step ${m.i} · ${m.masked}/${m.total} masked · ${m.tokens_per_s} tokens/s`, "running");
  }
  $("image-view").hidden = false;
  const sigma = m.sigma === null ? "∞" : m.sigma.toPrecision(3);
  if (m.kind === "image") {
    showImage("img-xt", m.x_t); showImage("img-x0", m.x0);
  } else if (m.kind === "points") {
    drawPoints("pts-xt", m.x_t); drawPoints("pts-x0", m.x0);
  }
  setStatus(`step ${m.i} · σ = ${sigma}`, "running");
}

function showImage(id, url) {
  const img = $(id);
  img.hidden = false;
  img.src = url;
}

function drawPoints(id, pts, lim = 4) {
  const c = $(id), ctx = c.getContext("2d");
  c.hidden = false;
  $(id.replace("pts", "img")).hidden = true;
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
  ctx.fillStyle = "rgba(40, 70, 160, 0.55)";
  const s = c.width / (2 * lim);
  for (const [x, y] of pts) ctx.fillRect((x + lim) * s - 1, (lim - y) * s - 1, 2, 2);
}

function stepColour(step, last) {
  if (step === 0) return "var(--prompt)";
  const f = last > 1 ? (step - 1) / (last - 1) : 0;
  return `hsl(${Math.round(215 - 205 * f)} 70% 40%)`;
}

function drawText(rows, last) {
  const box = $("text-canvas");
  box.replaceChildren();
  for (const row of rows) {
    const div = document.createElement("div");
    div.className = "sample";
    for (const [text, step] of row) {
      const span = document.createElement("span");
      if (text === null) { span.className = "mask"; span.textContent = " "; }
      else {
        span.className = step === 0 ? "tok prompt" : "tok";
        span.textContent = text;
        span.style.color = stepColour(step, last);
        span.title = step === 0 ? "prompt" : `committed at step ${step}`;
        span.dataset.step = String(step);
      }
      div.append(span);
    }
    box.append(div);
  }
}

function drawDone(m) {
  const s = m.summary, parts = [`done: ${s.sampler}`];
  if (s.steps) parts.push(`${s.steps} steps`);
  if (s.model_calls !== undefined) parts.push(`${s.model_calls} model calls`);
  if (s.nfe !== undefined) parts.push(`NFE ${s.nfe}`);
  if (s.tokens_per_s !== undefined) parts.push(`${s.tokens_per_s} tokens/s`);
  if (m.rows) {
    $("text-view").hidden = false;
    drawText(m.rows, Math.max(1, ...m.rows.flat().map(([, st]) => st ?? 0)));
  }
  if (m.image) { $("final-view").hidden = false; showImage("img-final", m.image); }
  setStatus(parts.join(" · "), "done");
}

$("controls").addEventListener("submit", generate);
$("stop").addEventListener("click", stop);
$("run").addEventListener("change", onRun);
window.addEventListener("pagehide", () => { if (controller) controller.abort(); });
loadRuns().catch((e) => setStatus(`cannot list runs: ${e.message}`, "error"));

// The request page follows its request live (templates/web/request_detail.html): server-sent events from
// #request's data-events (the API's GET body, twice a second, until terminal); if the browser has no
// EventSource or the server refuses a stream (503: too many open), it polls data-api instead. No reload.
// A static file, not inline: the Content-Security-Policy allows scripts from our own static files only.
(function () {
  const box = document.getElementById("request");
  const terminal = ["succeeded", "failed", "cancelled", "expired"];
  const $ = (id) => document.getElementById(id);
  const secs = (x) => (x === null || x === undefined) ? "–" : Number(x).toFixed(1) + " s";
  let done = false;

  function render(data) {
    const st = $("status");
    st.textContent = data.status; st.className = "status status-" + data.status;
    const isTerminal = terminal.includes(data.status);
    // On time or late, and by how much.
    let timeliness = "";
    if (data.status === "succeeded") {
      timeliness = data.on_time ? "on time" : "late by " + secs(data.late_by_seconds);
    } else if (!isTerminal && data.late_by_seconds) {
      timeliness = "past its deadline by " + secs(data.late_by_seconds);
    }
    $("timeliness").textContent = timeliness;
    $("timeliness").className = data.status === "succeeded" && !data.on_time || (!isTerminal && data.late_by_seconds) ? "late" : "";
    // Progress bar: the steps this request runs (N − K′).
    const showProgress = !isTerminal || data.status === "succeeded";
    $("progress-box").hidden = !showProgress;
    const bar = $("progress");
    if (data.progress !== null && data.progress !== undefined) bar.value = data.progress;
    $("progress-text").textContent = data.status === "running" && data.step !== null
      ? "step " + data.step + " of " + data.steps_to_run + " (" + Math.round(100 * (data.progress || 0)) + " %)"
      : data.status === "succeeded" ? "done" : data.status === "queued" ? "waiting for a GPU" : "";
    $("queue").textContent = data.status === "queued" && data.queue_position
      ? "Position " + data.queue_position + " in the queue of GPU worker " + data.worker + "." : "";
    let elapsed = "Waiting " + secs(data.waiting_seconds);
    if (data.generating_seconds !== null && data.generating_seconds !== undefined) {
      elapsed += " · generating " + secs(data.generating_seconds);
    }
    $("elapsed").textContent = elapsed;
    $("eta").textContent = !isTerminal && data.eta_seconds !== null && data.eta_seconds !== undefined
      ? "About " + secs(data.eta_seconds) + " left." : "";
    $("cancel-form").hidden = isTerminal;
    $("error").textContent = data.error || "";
    $("worker").textContent = data.worker ?? "–";
    $("k").textContent = (data.k_star ?? "–") + " / " + (data.k_served ?? "–");
    $("reuse").textContent = data.reuse_summary || "–";
    const nb = data.cache_neighbor_is_own ? "“" + data.cache_neighbor_prompt + "”" : data.cache_neighbor_prompt;
    $("neighbor").textContent = data.cache_neighbor_prompt
      ? nb + " (similarity " + Number(data.similarity).toFixed(3) + ")" : "none";
    $("timings").textContent = secs(data.queue_wait_seconds) + " / " + secs(data.service_seconds);
    if (data.model_label) {
      $("model-label").replaceChildren(Object.assign(document.createElement("span"),
        {className: "label", textContent: "Made by: " + data.model_label}));
      $("model").textContent = data.model_label;
    }
    if (data.image_url && !$("image")) {
      const img = document.createElement("img");
      img.id = "image"; img.alt = "generated image"; img.src = data.image_url;
      img.width = data.width; img.height = data.height;
      $("result").appendChild(img);
    }
    $("actions").hidden = data.status !== "succeeded";
    showPreview(data);
    if (isTerminal) done = true;
  }

  // Live preview while running: the worker's PNG of the current latent (about one a second), reloaded when the
  // step moves; hidden until one has loaded, and once the request is no longer running.
  let previewStep = null;
  const preview = $("preview");
  preview.addEventListener("load", () => { if (!done) $("preview-box").hidden = false; });
  function showPreview(data) {
    if (data.status !== "running") { $("preview-box").hidden = true; return; }
    if (data.step && data.step !== previewStep) {
      previewStep = data.step;
      preview.src = preview.dataset.src + "?step=" + data.step;
    }
  }

  async function poll() {
    try {
      const resp = await fetch(box.dataset.api, {credentials: "same-origin", headers: {"Accept": "application/json"}});
      if (!resp.ok) throw new Error(resp.status);
      render(await resp.json());
    } catch (e) { setTimeout(poll, 2000); return; }
    if (!done) setTimeout(poll, 700);
  }

  function stream() {
    if (!window.EventSource) { poll(); return; }
    const source = new EventSource(box.dataset.events);
    source.onmessage = (event) => {
      render(JSON.parse(event.data));
      if (done) source.close();
    };
    // A stream that ends normally reconnects by itself; one the server refused is CLOSED: poll instead.
    source.onerror = () => { if (source.readyState === EventSource.CLOSED && !done) poll(); };
  }

  // Cancel without leaving the page: the same form, sent in the background; the stream shows the result.
  $("cancel-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("cancel").disabled = true;
    try {
      await fetch(event.target.action, {method: "POST", body: new FormData(event.target), credentials: "same-origin"});
    } finally { $("cancel").disabled = false; }
  });

  $("copy-seed").addEventListener("click", async () => {
    const seed = $("copy-seed").dataset.seed;
    try { await navigator.clipboard.writeText(seed); $("copied").textContent = "Seed " + seed + " copied."; }
    catch (e) { $("copied").textContent = "Seed: " + seed; }
  });

  stream();
})();

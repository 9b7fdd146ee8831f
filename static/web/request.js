// The request page follows its request live (templates/web/request_detail.html): polls the API URL in
// #request's data-api until the row is terminal. A static file, not inline: the Content-Security-Policy
// allows scripts from our own static files only.
(function () {
  const box = document.getElementById("request");
  const terminal = ["succeeded", "failed", "cancelled", "expired"];
  const fmt = (x) => (x === null || x === undefined) ? "–" : Number(x).toFixed(2) + " s";
  async function poll() {
    let data;
    try {
      const resp = await fetch(box.dataset.api, {credentials: "same-origin", headers: {"Accept": "application/json"}});
      if (!resp.ok) throw new Error(resp.status);
      data = await resp.json();
    } catch (e) { setTimeout(poll, 2000); return; }
    const st = document.getElementById("status");
    st.textContent = data.status; st.className = "status status-" + data.status;
    document.getElementById("error").textContent = data.error || "";
    document.getElementById("worker").textContent = data.worker ?? "–";
    document.getElementById("k").textContent = (data.k_star ?? "–") + " / " + (data.k_served ?? "–");
    const nb = data.cache_neighbor_is_own ? "“" + data.cache_neighbor_prompt + "”" : data.cache_neighbor_prompt;
    document.getElementById("neighbor").textContent = data.cache_neighbor_prompt
      ? nb + " (similarity " + Number(data.similarity).toFixed(3) + ")" : "none";
    document.getElementById("timings").textContent = fmt(data.queue_wait_seconds) + " / " + fmt(data.service_seconds);
    if (data.model_label) document.getElementById("model-label").innerHTML = '<span class="label"></span>',
      document.querySelector("#model-label .label").textContent = "Made by: " + data.model_label;
    if (data.image_url && !document.getElementById("image")) {
      const img = document.createElement("img");
      img.id = "image"; img.alt = "generated image"; img.src = data.image_url;
      document.getElementById("result").appendChild(img);
    }
    if (!terminal.includes(data.status)) setTimeout(poll, 700);
  }
  poll();
})();

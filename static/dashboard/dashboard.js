// The SLO dashboard's live refresh (templates/dashboard/index.html; its settings are the data-* of
// #dashboard-config). A static file, not inline: the Content-Security-Policy allows our own scripts only.
(function () {
  "use strict";
  const config = document.getElementById("dashboard-config").dataset;  // set by the template
  const dataUrl = config.url;
  const state = document.getElementById("refresh-state");
  const renderedPlan = config.plan;
  function planSignature(p) { return p ? [p.policy, p.status, p.worker_levels.join(",")].join("|") : ""; }
  function fmt(v, kind) {
    if (v === null || v === undefined) return "\u2013";
    if (kind === "rate") return (v < 10 ? v.toFixed(3) : v.toFixed(1)) + "/s";
    if (kind === "pct") return (100 * v).toFixed(1) + "%";
    if (kind === "q") return v.toFixed(3);
    if (kind === "s") return v.toFixed(2) + " s";
    return String(v);
  }
  function get(obj, path) { return path.split(".").reduce((o, k) => (o == null ? o : o[k]), obj); }
  function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }
  function rows(tbody, items, make) {
    tbody.replaceChildren(...items.map(it => { const tr = document.createElement("tr"); make(it).forEach(td => tr.appendChild(td)); return tr; }));
  }
  async function refresh() {
    try {
      const resp = await fetch(dataUrl, {credentials: "same-origin", cache: "no-store"});
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const d = await resp.json();
      document.querySelectorAll("[data-key]").forEach(el => {
        el.textContent = fmt(get(d, el.dataset.key), el.dataset.fmt || "");
      });
      rows(document.getElementById("mix-body"), d.k_mix,
           m => [cell(m.k), cell(m.count, "num"), cell(fmt(m.share, "pct"), "num")]);
      rows(document.getElementById("workers-body"), d.workers.rows,
           w => [cell(w.worker), cell(w.queue), cell(w.level === null ? "\u2013" : w.level, "num"),
                 cell(w.queued, "num"), cell(w.running, "num")]);
      state.textContent = "";
      if (planSignature(d.plan) !== renderedPlan) location.reload();  // new layout: redraw plan tables
    } catch (e) {
      state.textContent = "(refresh failed: " + e.message + ")";
    }
  }
  function refreshCharts() {
    const t = Date.now();
    document.querySelectorAll("img.chart").forEach(img => { img.src = img.dataset.base + "&t=" + t; });
  }
  setInterval(refresh, Number(config.refreshMs));
  setInterval(refreshCharts, Number(config.chartRefreshMs));
})();

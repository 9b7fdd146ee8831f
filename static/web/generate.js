// The generate form (templates/web/home.html): a live CLIP-token counter next to the prompt (counted by the
// server with the model's own tokenizer, so it agrees with the 400 a too-long prompt gets), Ctrl/Cmd+Enter
// to submit, and the last settings remembered in this browser (not the prompt).
(function () {
  const form = document.getElementById("generate-form");
  if (!form) return;
  const prompt = document.getElementById("prompt");
  const counter = document.getElementById("token-count");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const REMEMBERED = ["negative_prompt", "steps", "width", "height", "guidance_scale", "priority", "count"];
  const KEY = "t2i:last-settings";

  let timer = null, asked = 0;
  async function count() {
    const mine = ++asked;
    try {
      const resp = await fetch(form.dataset.tokensUrl, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRFToken": csrf, "Accept": "application/json"},
        body: JSON.stringify({text: prompt.value}),
      });
      if (!resp.ok || mine !== asked) return;
      const data = await resp.json();
      counter.textContent = data.tokens + " / " + data.max + " tokens";
      counter.classList.toggle("over", data.tokens > data.max);
    } catch (e) { /* the counter is a hint; submit still validates */ }
  }
  prompt.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(count, 250); });
  if (prompt.value) count();

  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  // Remember the settings of each submit; restore them on a fresh form (not over an edit or an error).
  form.addEventListener("submit", () => {
    const saved = {};
    for (const name of REMEMBERED) if (form.elements[name]) saved[name] = form.elements[name].value;
    try { localStorage.setItem(KEY, JSON.stringify(saved)); } catch (e) { /* private mode */ }
  });
  if (!form.dataset.prefilled) {
    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(KEY) || "null"); } catch (e) { saved = null; }
    if (saved) {
      for (const name of REMEMBERED) {
        const field = form.elements[name];
        if (field && saved[name] !== undefined && saved[name] !== "") field.value = saved[name];
      }
    }
  }
})();

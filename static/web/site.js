// Every page (templates/base.html): timestamps in the browser's own time zone, and the header's menu
// button on narrow screens (site.css collapses the navigation below 700 px once this script runs).
(function () {
  document.documentElement.classList.add("js");
  for (const el of document.querySelectorAll("time[datetime]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (isNaN(when)) continue;
    el.title = when.toString();
    el.textContent = el.classList.contains("date")
      ? when.toLocaleString() : when.toLocaleTimeString();
  }
  // Buttons that destroy something ask first (data-confirm); without JavaScript they act at once.
  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  }
  const toggle = document.getElementById("menu-toggle");
  if (toggle) {
    toggle.addEventListener("click", () => {
      const open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", String(open));
      document.body.classList.toggle("menu-open", open);
    });
  }
})();

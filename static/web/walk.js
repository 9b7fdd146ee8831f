// The request page: ← and → open the newer and older request of the gallery it was opened from (the links
// #newer and #older carry its filter). Keys typed into a field, or with a modifier, are left alone.
(function () {
  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
    const link = document.getElementById(event.key === "ArrowLeft" ? "newer" : event.key === "ArrowRight" ? "older" : "");
    if (link) {
      event.preventDefault();
      window.location.assign(link.href);
    }
  });
})();

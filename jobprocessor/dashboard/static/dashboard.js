// jobprocessor dashboard: our own small script (nothing from a CDN). Two jobs:
// 1. pages with <main data-refresh="N"> reload their content every N seconds (when the tab is visible), without
//    a full page load: fetch the same URL, take its <main>, swap it in;
// 2. forms with data-confirm="question" ask before they are sent.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var every = main ? parseInt(main.getAttribute("data-refresh") || "0", 10) : 0;
  var busy = false;
  function refresh() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Dashboard-Refresh": "1" } })
      .then(function (response) {
        if (!response.ok || response.redirected) { return null; }
        return response.text();
      })
      .then(function (html) {
        if (!html) { return; }
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        if (next) {
          main.replaceChildren.apply(main, Array.prototype.slice.call(next.childNodes));
          main.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () { /* offline for a moment: the next turn tries again */ })
      .then(function () { busy = false; });
  }
  if (every > 0) { window.setInterval(refresh, every * 1000); }
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
})();

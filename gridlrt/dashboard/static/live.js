// gridlrt dashboard: live parts. Every element with data-live="/fragment/..." is refreshed
// every data-every milliseconds by fetching that fragment and swapping its content in place
// (no page reload, no library, no CDN). A failed fetch leaves the last content and marks the
// element stale; the next one tries again. Pauses while the tab is hidden.
(function () {
  "use strict";
  function refresh(el) {
    if (document.hidden) { return; }
    fetch(el.getAttribute("data-live"), {
      credentials: "same-origin",
      headers: { "X-Requested-With": "live" },
    })
      .then(function (r) {
        if (!r.ok) { throw new Error(r.status); }
        return r.text();
      })
      .then(function (html) {
        el.innerHTML = html;
        el.classList.remove("stale");
        el.setAttribute("data-refreshed", String(Date.now()));
        var n = Number(el.getAttribute("data-refreshes") || "0") + 1;
        el.setAttribute("data-refreshes", String(n));
      })
      .catch(function () { el.classList.add("stale"); });
  }
  function start() {
    var live = document.querySelectorAll("[data-live]");
    Array.prototype.forEach.call(live, function (el) {
      var every = Number(el.getAttribute("data-every") || "3000");
      window.setInterval(function () { refresh(el); }, Math.max(every, 500));
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();

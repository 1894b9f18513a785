// Sallyport: progressive enhancement only. Every page works without this script.
// A live countdown for elements with data-expires-at (milliseconds since the epoch).
(function () {
  "use strict";
  function left(ms) {
    if (ms <= 0) { return "ended"; }
    var s = Math.floor(ms / 1000);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return (h > 0 ? h + ":" + pad(m) : m) + ":" + pad(sec) + " left";
  }
  function tick() {
    var now = Date.now();
    var els = document.querySelectorAll("[data-expires-at]");
    for (var i = 0; i < els.length; i++) {
      var at = Number(els[i].getAttribute("data-expires-at"));
      if (!isNaN(at)) { els[i].textContent = left(at - now); }
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (document.querySelector("[data-expires-at]")) {
      tick();
      setInterval(tick, 1000);
    }
  });
})();

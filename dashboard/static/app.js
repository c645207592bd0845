// Levee dashboard: refreshes the live pages in place. Every page works without this script
// (a <noscript> meta refresh does the same); it only avoids reloading the whole page and keeps
// what the user is typing or has selected.
"use strict";
(function () {
  var poll = parseInt(document.body.getAttribute("data-poll") || "0", 10);
  if (!(poll > 0)) {
    return;
  }
  var main = document.getElementById("main");
  var dirty = false; // the user has typed or selected something: leave the page alone
  main.addEventListener("input", function () { dirty = true; });
  main.addEventListener("change", function () { dirty = true; });

  function refresh() {
    if (dirty || document.hidden) {
      return schedule();
    }
    fetch(window.location.href, { headers: { "X-Levee-Partial": "1" }, credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) { throw new Error(r.status); }
        return r.text();
      })
      .then(function (html) {
        if (!dirty) {
          var doc = new DOMParser().parseFromString("<main>" + html + "</main>", "text/html");
          main.replaceChildren.apply(main, Array.prototype.slice.call(doc.body.firstChild.childNodes));
          var finished = document.querySelector("[data-finished=true]");
          if (finished) { return; } // a finished task needs no more polling
        }
        schedule();
      })
      .catch(function () { schedule(); });
  }
  function schedule() {
    window.setTimeout(refresh, poll * 1000);
  }
  schedule();
})();

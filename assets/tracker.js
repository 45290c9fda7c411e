// popularity tracker: <script defer src="https://popularity.example.com/tracker.js"
//   data-article-id="a-123" data-site="jakarta-globe"></script>
// (data-site: the site's id when the service serves a network of sites; the
// article's section and tags come from its metadata, never from the page).
// Sends a page_view on load, engaged seconds (page visible, reader active
// within 5 s) every 15 s and on pagehide, and a share when an element with
// data-popularity-share="network" is clicked. No cookies, no identifiers:
// the collector derives a daily visitor. Failed sends wait in a small queue.
(function () {
  "use strict";
  var s = document.currentScript, d = s && s.dataset;
  if (!d || !d.articleId || !window.fetch) return;
  var url = new URL(s.src).origin + "/v1/events";
  var base = { article_id: d.articleId };
  if (d.site) base.site = d.site;
  var queue = [], engaged = 0, active = Date.now(), MAX_QUEUE = 50;

  function event(type, extra) {
    var e = { type: type, occurred_at: Date.now() }, k;
    for (k in base) e[k] = base[k];
    for (k in extra) e[k] = extra[k];
    return e;
  }

  function requeue(events) {
    queue = queue.concat(events).slice(-MAX_QUEUE);
  }

  // Sends what is queued plus `events`; what fails stays queued. Refused
  // events (4xx other than 429) are dropped: sending them again cannot help.
  function send(events) {
    var batch = queue.concat(events || []);
    queue = [];
    if (!batch.length) return;
    fetch(url, {
      method: "POST", body: JSON.stringify(batch), keepalive: true,
      credentials: "omit", headers: { "content-type": "text/plain" }
    }).then(function (r) {
      if (r.status === 429 || r.status >= 500) requeue(batch);
    }, function () { requeue(batch); });
  }

  // On the way out only a beacon is sure to leave.
  function leave() {
    if (engaged > 0) queue.push(event("engagement", { engaged_seconds: engaged }));
    engaged = 0;
    if (queue.length && navigator.sendBeacon) {
      try {
        if (navigator.sendBeacon(url, new Blob([JSON.stringify(queue)], { type: "text/plain" }))) queue = [];
      } catch (e) { /* kept for the next page view of this tab */ }
    }
  }

  ["pointerdown", "keydown", "scroll", "mousemove", "touchstart"].forEach(function (t) {
    addEventListener(t, function () { active = Date.now(); }, { passive: true, capture: true });
  });
  setInterval(function () {
    if (document.visibilityState === "visible" && Date.now() - active <= 5000) engaged++;
  }, 1000);
  setInterval(function () {
    var e = engaged ? [event("engagement", { engaged_seconds: engaged })] : [];
    engaged = 0;
    send(e);
  }, 15000);
  document.addEventListener("click", function (e) {
    var el = e.target && e.target.closest && e.target.closest("[data-popularity-share]");
    if (el) send([event("share", { network: el.getAttribute("data-popularity-share") || "other" })]);
  }, true);
  addEventListener("pagehide", leave);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") leave();
  });
  send([event("page_view")]);
})();

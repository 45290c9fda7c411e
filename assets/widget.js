// popularity widget: put
//   <script defer src="https://popularity.example.com/widget.js"></script>
//   <div data-popularity-widget data-profile="trending" data-section="news" data-limit="5"></div>
// on a page and the div becomes a live list of the most read articles,
// kept current through /v1/stream/rankings (polling /v1/rankings where
// EventSource is missing). Options: data-profile (default trending),
// data-section or data-tag, data-limit (1-100, default 5), data-title.
// No dependencies; every text is inserted as text, never as HTML.
(function () {
  "use strict";
  var script = document.currentScript;
  var base = script && script.src ? new URL(script.src).origin : "";
  var POLL_MS = 15000;

  function ago(iso) {
    var s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    function unit(n, w) { return n + " " + w + (n === 1 ? "" : "s") + " ago"; }
    if (!(s >= 0)) return "";
    if (s < 60) return "just now";
    if (s < 3600) return unit(Math.floor(s / 60), "minute");
    if (s < 86400) return unit(Math.floor(s / 3600), "hour");
    return unit(Math.floor(s / 86400), "day");
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs) if (attrs[k] != null) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }

  // Only http(s) links and images reach the page.
  function safe(url) {
    try {
      var u = new URL(url);
      return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
    } catch (e) {
      return null;
    }
  }

  function render(root, data) {
    var list = el("ol", { "class": "popularity-list" });
    (data.items || []).forEach(function (item) {
      var li = el("li", { "data-article-id": item.article_id });
      var img = item.image_url && safe(item.image_url);
      if (img) li.appendChild(el("img", { src: img, alt: "", loading: "lazy", width: "72", height: "48" }));
      var body = el("div", { "class": "popularity-body" });
      var href = item.url && safe(item.url);
      body.appendChild(el(href ? "a" : "span", { href: href, "class": "popularity-title" }, item.title || item.article_id));
      var meta = el("div", { "class": "popularity-meta" });
      if (item.section) meta.appendChild(el("span", { "class": "popularity-section" }, item.section));
      if (item.published_at) {
        if (item.section) meta.appendChild(document.createTextNode(" · "));
        meta.appendChild(el("time", { datetime: item.published_at }, ago(item.published_at)));
      }
      body.appendChild(meta);
      if (item.summary) body.appendChild(el("p", { "class": "popularity-summary" }, item.summary));
      li.appendChild(body);
      list.appendChild(li);
    });
    if (!list.firstChild) list.appendChild(el("li", { "class": "popularity-empty" }, "Nothing yet"));
    var old = root.querySelector(".popularity-list");
    if (old) root.replaceChild(list, old); else root.appendChild(list);
  }

  function start(root) {
    var d = root.dataset;
    var q = new URLSearchParams();
    if (d.section) q.set("section", d.section);
    if (d.tag) q.set("tag", d.tag);
    q.set("limit", d.limit || "5");
    var path = "/" + encodeURIComponent(d.profile || "trending") + "?" + q;
    root.classList.add("popularity-widget");
    if (d.title) root.appendChild(el("h2", { "class": "popularity-heading" }, d.title));
    root.setAttribute("aria-live", "polite");
    function show(text) {
      try { render(root, JSON.parse(text)); } catch (e) { /* a bad frame: keep the last list */ }
    }
    if (window.EventSource) {
      var es = new EventSource(base + "/v1/stream/rankings" + path);
      es.addEventListener("ranking", function (e) { show(e.data); });
      return;
    }
    function poll() {
      fetch(base + "/v1/rankings" + path, { headers: { accept: "application/json" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (t) { if (t) show(t); })
        .catch(function () { /* the next poll retries */ })
        .then(function () { setTimeout(poll, POLL_MS); });
    }
    poll();
  }

  function style() {
    var css = ".popularity-widget{font:15px/1.4 system-ui,sans-serif;color:#1a1a1a;background:#fff}" +
      ".popularity-heading{font-size:13px;letter-spacing:.08em;text-transform:uppercase;margin:0 0 8px}" +
      ".popularity-list{list-style:decimal;margin:0;padding-left:1.6em}" +
      ".popularity-list li{margin:0 0 10px;overflow:hidden}" +
      ".popularity-list img{float:right;margin-left:8px;border-radius:3px;object-fit:cover}" +
      ".popularity-title{color:#0b3d91;font-weight:600;text-decoration:none}" +
      ".popularity-title:hover,.popularity-title:focus{text-decoration:underline}" +
      ".popularity-meta{font-size:12px;color:#4d4d4d}" +
      ".popularity-section{text-transform:capitalize}" +
      ".popularity-summary{margin:2px 0 0;font-size:13px;color:#333}";
    document.head.appendChild(el("style", {}, css));
  }

  function init() {
    style();
    var roots = document.querySelectorAll("[data-popularity-widget]");
    for (var i = 0; i < roots.length; i++) start(roots[i]);
    // Relative times keep ticking.
    setInterval(function () {
      var times = document.querySelectorAll(".popularity-widget time[datetime]");
      for (var i = 0; i < times.length; i++) times[i].textContent = ago(times[i].getAttribute("datetime"));
    }, 30000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

// popularity widget: put
//   <script defer src="https://popularity.example.com/widget.js"></script>
//   <div data-popularity-widget data-profile="trending" data-section="news" data-limit="5"></div>
// on a page and the div becomes a live list of the most read articles,
// kept current through /v1/stream/rankings (polling /v1/rankings where
// EventSource is missing, or when the stream is refused). Options:
//   data-list       ranking (default), rising (what is taking off now), index
//                   (the News Index) or tags (Popular Tags)
//   data-site       only this site's list (its id); absent: the whole network
//   data-profile    ranking profile (default trending)
//   data-section    only this section (ranking, rising, index); data-tag: only
//                   this tag (ranking, rising)
//   data-published-within  only articles published this recently, e.g. 12h (ranking)
//   data-limit      1-100 (default 5)
//   data-title      a heading above the list
//   data-compact    titles only, numbered (no section, time, summary or image)
//   data-refresh    seconds between polls of index, tags and the fallback (default 15)
// No dependencies; every text is inserted as text, never as HTML.
// window.PopularityWidget.mount(el) / .unmount(el) start and stop one by hand.
(function () {
  "use strict";
  var script = document.currentScript;
  var base = script && script.src ? new URL(script.src).origin : "";

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

  function article(item, compact, network) {
    var li = el("li", { "data-article-id": item.article_id, "data-site": item.site });
    var img = !compact && item.image_url && safe(item.image_url);
    if (img) li.appendChild(el("img", { src: img, alt: "", loading: "lazy", width: "72", height: "48" }));
    var body = el("div", { "class": "popularity-body" });
    var href = item.url && safe(item.url);
    body.appendChild(el(href ? "a" : "span", { href: href, "class": "popularity-title" }, item.title));
    if (!compact) {
      var meta = el("div", { "class": "popularity-meta" });
      var parts = [];
      if (network && item.site && item.site !== "default") parts.push(el("span", { "class": "popularity-site" }, item.site));
      // Shown by the name it was published with; the slug when none is known.
      if (item.section) parts.push(el("span", { "class": "popularity-section", "data-section": item.section }, item.section_name || item.section));
      if (item.published_at) parts.push(el("time", { datetime: item.published_at }, ago(item.published_at)));
      parts.forEach(function (p, i) {
        if (i) meta.appendChild(document.createTextNode(" · "));
        meta.appendChild(p);
      });
      body.appendChild(meta);
      if (item.summary) body.appendChild(el("p", { "class": "popularity-summary" }, item.summary));
    }
    li.appendChild(body);
    return li;
  }

  function render(root, kind, data) {
    var compact = root.hasAttribute("data-compact");
    var network = !root.dataset.site;
    var ordered = kind === "ranking" || kind === "rising";
    var list = el(ordered ? "ol" : "ul", { "class": "popularity-list popularity-" + kind });
    (data.items || []).forEach(function (item) {
      if (kind === "tags") list.appendChild(el("li", { "data-tag": item.tag }, "#" + (item.name || item.tag)));
      // An article is shown by its headline, never by its id.
      else if (typeof item.title === "string" && item.title) list.appendChild(article(item, compact, network));
    });
    if (!list.firstChild) list.appendChild(el("li", { "class": "popularity-empty" }, "Nothing yet"));
    var old = root.querySelector(".popularity-list");
    if (old) root.replaceChild(list, old); else root.appendChild(list);
  }

  // The route and query of a widget's list.
  function source(d, kind) {
    var q = new URLSearchParams();
    var profile = encodeURIComponent(d.profile || "trending");
    q.set("limit", d.limit || "5");
    if (d.site) q.set("site", d.site);
    if (kind === "tags") return { path: "/v1/rankings/" + profile + "/tags", query: q };
    if (d.section) q.set("section", d.section);
    if (kind === "index") return { path: "/v1/index", query: q };
    if (d.tag) q.set("tag", d.tag);
    if (kind === "rising") return { path: "/v1/rising", query: q, stream: "/v1/stream/rising", event: "rising" };
    if (d.publishedWithin) q.set("published_within", d.publishedWithin);
    return { path: "/v1/rankings/" + profile, query: q, stream: "/v1/stream/rankings/" + profile, event: "ranking" };
  }

  function mount(root) {
    unmount(root);
    var d = root.dataset;
    var kind = ["index", "tags", "rising"].indexOf(d.list) >= 0 ? d.list : "ranking";
    var src = source(d, kind);
    var refresh = Math.max(2, Number(d.refresh) || 15) * 1000;
    root.classList.add("popularity-widget");
    if (d.title && !root.querySelector(".popularity-heading")) {
      root.insertBefore(el("h2", { "class": "popularity-heading" }, d.title), root.firstChild);
    }
    root.setAttribute("aria-live", "polite");
    var state = { stopped: false };
    root.__popularity = state;
    function show(text) {
      try { render(root, kind, JSON.parse(text)); } catch (e) { /* a bad frame: keep the last list */ }
    }
    var timer = null;
    function poll() {
      fetch(base + src.path + "?" + src.query, { headers: { accept: "application/json" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (t) { if (t && !state.stopped) show(t); })
        .catch(function () { /* the next poll retries */ })
        .then(function () { if (!state.stopped) timer = setTimeout(poll, refresh); });
    }
    function polling() {
      state.stop = function () { clearTimeout(timer); };
      poll();
    }
    if (src.stream && window.EventSource) {
      var es = new EventSource(base + src.stream + "?" + src.query);
      es.addEventListener(src.event, function (e) { show(e.data); });
      // A stream refused (too many open) or failed for good is not retried
      // by the browser: the list is polled instead, so it never stays blank.
      es.onerror = function () {
        if (es.readyState === 2 && !state.stopped) {
          es.close();
          polling();
        }
      };
      state.stop = function () { es.close(); };
      return;
    }
    polling();
  }

  function unmount(root) {
    var state = root.__popularity;
    if (!state) return;
    state.stopped = true;
    state.stop && state.stop();
    root.__popularity = null;
  }

  function style() {
    var css = ".popularity-widget{font:15px/1.4 system-ui,sans-serif;color:#1a1a1a;background:#fff}" +
      ".popularity-heading{font-size:13px;letter-spacing:.08em;text-transform:uppercase;margin:0 0 8px}" +
      ".popularity-list{margin:0;padding-left:1.6em}" +
      "ol.popularity-list{list-style:decimal}ul.popularity-list{list-style:none;padding-left:0}" +
      ".popularity-list li{margin:0 0 10px;overflow:hidden}" +
      ".popularity-list img{float:right;margin-left:8px;border-radius:3px;object-fit:cover}" +
      ".popularity-title{color:#0b3d91;font-weight:600;text-decoration:none}" +
      ".popularity-title:hover,.popularity-title:focus{text-decoration:underline}" +
      ".popularity-meta{font-size:12px;color:#4d4d4d}" +
      ".popularity-site{text-transform:uppercase;letter-spacing:.04em}" +
      ".popularity-summary{margin:2px 0 0;font-size:13px;color:#333}" +
      ".popularity-tags{display:flex;flex-wrap:wrap;gap:6px}" +
      ".popularity-tags li{margin:0;border:1px solid #ccc;border-radius:12px;padding:1px 9px;font-size:13px}";
    // First in the head, so that the page's own rules win.
    document.head.insertBefore(el("style", {}, css), document.head.firstChild);
  }

  function init() {
    style();
    var roots = document.querySelectorAll("[data-popularity-widget]");
    for (var i = 0; i < roots.length; i++) mount(roots[i]);
    // Relative times keep ticking.
    setInterval(function () {
      var times = document.querySelectorAll(".popularity-widget time[datetime]");
      for (var i = 0; i < times.length; i++) times[i].textContent = ago(times[i].getAttribute("datetime"));
    }, 30000);
  }

  window.PopularityWidget = { mount: mount, unmount: unmount };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

// The sidebar: reads the public API and renders four widgets. No framework,
// no external resources; works against `popularity demo` and `serve`.
"use strict";

const REFRESH_MS = 5000;
const $ = (sel) => document.querySelector(sel);

async function api(path) {
  const r = await fetch(path, { headers: { accept: "application/json" } });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  const unit = (n, w) => `${n} ${w}${n === 1 ? "" : "s"} ago`;
  if (s < 60) return "just now";
  if (s < 3600) return unit(Math.floor(s / 60), "minute");
  if (s < 86400) return unit(Math.floor(s / 3600), "hour");
  return unit(Math.floor(s / 86400), "day");
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function headline(item) {
  const text = item.title || item.article_id;
  return item.url ? el("a", { href: item.url }, text) : el("span", {}, text);
}

function fill(list, items, render) {
  list.replaceChildren(...(items.length ? items.map(render) : [el("li", { class: "empty" }, "Nothing yet")]));
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  return q.toString();
}

async function refresh() {
  const profile = $("#profile").value || "trending";
  const section = $("#section").value;
  try {
    const [top, reads, index, tags] = await Promise.all([
      api(`/v1/rankings/${profile}?${query({ limit: 5, section })}`),
      // Popular Reads: what was read most over the day, among the articles
      // of the last 12 hours; Most Popular follows the chosen profile.
      api(`/v1/rankings/popular?${query({ limit: 5, section, published_within: "12h" })}`),
      api(`/v1/index?${query({ limit: 8, section })}`),
      api(`/v1/rankings/${profile}/tags?limit=12`),
    ]);
    fill($("#most-popular ol"), top.items, (i) =>
      el("li", { "data-article-id": i.article_id }, el("div", {}, headline(i))));
    fill($("#popular-reads ol"), reads.items, (i) =>
      el("li", { "data-article-id": i.article_id }, headline(i),
        el("span", { class: "meta" },
          el("span", { class: "section-name" }, i.section || ""), i.section ? " · " : "",
          el("time", { datetime: i.published_at || "" }, ago(i.published_at))),
        i.summary ? el("p", { class: "summary" }, i.summary) : ""));
    fill($("#news-index ul"), index.items, (i) =>
      el("li", { "data-article-id": i.article_id }, headline(i),
        el("span", { class: "meta" }, el("time", { datetime: i.published_at || "" }, ago(i.published_at)))));
    fill($("#popular-tags ul"), tags.items, (t) => el("li", { "data-tag": t.tag }, `#${t.tag}`));
    $("#status").textContent = `Updated ${new Date(top.generated_at).toLocaleTimeString()}`;
  } catch (e) {
    $("#status").textContent = `Could not refresh: ${e.message}`;
  }
}

async function start() {
  try {
    const [profiles, index] = await Promise.all([api("/v1/rankings"), api("/v1/index?limit=100")]);
    for (const p of profiles.profiles) $("#profile").append(el("option", { value: p.name }, p.name));
    const sections = [...new Set(index.items.map((i) => i.section).filter(Boolean))].sort();
    for (const s of sections) $("#section").append(el("option", { value: s }, s));
  } catch (e) {
    $("#status").textContent = `Could not load: ${e.message}`;
  }
  $("#profile").addEventListener("change", refresh);
  $("#section").addEventListener("change", refresh);
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

start();

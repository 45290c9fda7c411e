// The demo's article page: shows the article and what was counted of it,
// from the API, every 5 seconds. A file of its own so that the page's
// Content-Security-Policy allows no inline script.
"use strict";
const story = document.getElementById("story").dataset;
const id = story.articleId;
const site = story.site;
async function show() {
  const r = await fetch(`/v1/articles/${encodeURIComponent(id)}?site=${encodeURIComponent(site)}`);
  if (!r.ok) return;
  const a = await r.json();
  document.getElementById("title").textContent = a.title || "An article not yet published";
  document.getElementById("section").textContent = a.section || "";
  document.getElementById("summary").textContent = a.summary || "";
  const c = a.counts;
  document.getElementById("counts").textContent =
    `${c.page_view} page views, ${c.share} shares, ${c.engagement} engagement events counted; trending score ${a.profiles[0].score.toFixed(2)}`;
}
show();
setInterval(show, 5000);

// The page at /: four widgets (see /widget.js) and the three choices (site,
// section, profile) that re-point them. Each widget names in data-follows which choices it takes.
"use strict";

const $ = (sel) => document.querySelector(sel);

async function api(path) {
  const r = await fetch(path, { headers: { accept: "application/json" } });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function option(value, label) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label || value;
  return o;
}

function repoint() {
  const chosen = {
    site: $("#site").value,
    section: $("#section").value,
    profile: $("#profile").value || "trending",
  };
  for (const w of document.querySelectorAll("[data-follows]")) {
    for (const choice of w.dataset.follows.split(" ")) {
      if (chosen[choice]) w.dataset[choice] = chosen[choice];
      else delete w.dataset[choice];
    }
    window.PopularityWidget.mount(w);
  }
}

async function start() {
  try {
    const [profiles, index, sites] = await Promise.all([
      api("/v1/rankings"),
      api("/v1/index?limit=100"),
      api("/v1/sites"),
    ]);
    $("#profile").replaceChildren(...profiles.profiles.map((p) => option(p.name)));
    $("#profile").value = "trending";
    // Each section by the name it was published with, its slug as the value.
    const names = new Map();
    for (const i of index.items) if (i.section) names.set(i.section, i.section_name || i.section);
    const sections = [...names].sort((a, b) => a[1].localeCompare(b[1]));
    $("#section").append(...sections.map(([slug, name]) => option(slug, name)));
    // One site: nothing to choose.
    if (sites.sites.length > 1) $("#site").append(...sites.sites.map((s) => option(s.id, s.name)));
    else $("#site").parentElement.hidden = true;
  } catch (e) {
    // The lists still work; only the choices are missing.
  }
  $("#site").addEventListener("change", repoint);
  $("#profile").addEventListener("change", repoint);
  $("#section").addEventListener("change", repoint);
}

start();

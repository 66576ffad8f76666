// mmsearch console: plain JavaScript, no dependencies, talks only to this gateway.
// The bearer token lives in sessionStorage and is sent only in the Authorization header.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "mmsearch.token";
const state = { request: null, upload: null, nextPage: "" };

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function showMessage(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = kind || "error";
  box.hidden = !text;
}

function askToken(reason) {
  if (reason) showMessage(reason, "error");
  const dialog = $("token-dialog");
  if (!dialog.open) dialog.showModal();
  $("token-input").focus();
}

async function api(path, options) {
  const headers = Object.assign({}, (options && options.headers) || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (error) {
    throw new Error("The gateway cannot be reached: " + error.message);
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    if (response.status === 401) {
      askToken("Your token was not accepted (" + detail + "). Enter a valid token.");
    } else if (response.status === 403) {
      showMessage("This token may not do that: " + detail, "error");
    }
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return body;
}

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children || []) if (child) node.appendChild(child);
  return node;
}

function fmt(value, digits) { return value === undefined ? "–" : Number(value).toFixed(digits === undefined ? 3 : digits); }

function filterFromForm() {
  const conditions = [];
  const tags = $("tags").value.split(",").map((t) => t.trim()).filter(Boolean);
  if (tags.length) {
    conditions.push({ condition: { field: "tags", in: { values: tags.map((t) => ({ stringValue: t })) } } });
  }
  const source = $("source").value.trim();
  if (source) conditions.push({ condition: { field: "source", eq: { stringValue: source } } });
  if (!conditions.length) return null;
  return conditions.length === 1 ? conditions[0] : { allOf: { filters: conditions } };
}

function requestFromForm() {
  const request = { topK: Number($("topk").value) || 12 };
  if ($("space").value) request.space = { name: $("space").value };
  if ($("modality").value) request.modalities = [$("modality").value];
  const filter = filterFromForm();
  if (filter) request.filter = filter;
  if ($("hybrid").checked) request.hybrid = { enabled: true };
  if ($("rerank").checked) request.rerank = { enabled: true };
  return request;
}

async function runSearch(pageToken) {
  const request = Object.assign({}, state.request);
  if (pageToken) request.pageToken = pageToken;
  $("summary").textContent = "Searching…";
  try {
    let answer;
    if (state.upload) {
      const form = new FormData();
      form.append("file", state.upload, state.upload.name || "query");
      form.append("request", JSON.stringify(request));
      answer = await api("/v1/search/upload", { method: "POST", body: form });
    } else {
      answer = await api("/v1/search", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request),
      });
    }
    showMessage("");
    render(answer, Boolean(pageToken));
  } catch (error) {
    $("summary").textContent = "";
    if (error.status !== 401 && error.status !== 403) showMessage("Search failed: " + error.message, "error");
  }
}

function render(answer, append) {
  const list = $("results");
  if (!append) list.replaceChildren();
  const hits = answer.hits || [];
  const t = answer.timings || {};
  const stages = [["embed", t.embedMs], ["ann", t.annMs], ["bm25", t.bm25Ms], ["fusion", t.fusionMs], ["rerank", t.rerankMs]]
    .filter(([, ms]) => ms !== undefined).map(([name, ms]) => `${name} ${fmt(ms, 1)} ms`);
  $("summary").textContent =
    `${hits.length} hit(s) in ${answer.space}: ${stages.join(", ")}, total ${fmt(t.totalMs, 1)} ms` +
    (answer.degraded ? ` (degraded: ${(answer.degradedReasons || []).join("; ")})` : "");
  for (const hit of hits) list.appendChild(card(hit, answer.space));
  state.nextPage = answer.nextPageToken || "";
  $("more").hidden = !state.nextPage;
}

function card(hit, space) {
  const preview = hit.preview || {};
  const scores = hit.scores || {};
  const title = (hit.metadata && hit.metadata.title) || hit.itemId;
  const figure = preview.thumbnailJpeg
    ? el("img", { src: "data:image/jpeg;base64," + preview.thumbnailJpeg, alt: title, class: "thumb" })
    : el("div", { class: "placeholder", "aria-hidden": "true", text: (hit.modality || "").replace("MODALITY_", "").toLowerCase() });
  const stages = el("dl", { class: "scores" }, [
    ["score", hit.score], ["vector", scores.vector], ["bm25", scores.bm25], ["fused", scores.fused], ["rerank", scores.rerank],
  ].filter(([, v]) => v !== undefined).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: fmt(v) })]));
  const open = el("button", { type: "button", class: "open", "data-item": hit.itemId, text: title });
  open.addEventListener("click", () => showItem(hit.itemId, space));
  return el("li", { class: "hit", "data-item": hit.itemId }, [
    figure, open, preview.snippet ? el("p", { class: "snippet", text: preview.snippet }) : null, stages,
  ]);
}

async function showItem(itemId, space) {
  const body = $("item-body");
  body.replaceChildren(el("p", { text: "Loading…" }));
  $("item-title").textContent = itemId;
  $("item-dialog").showModal();
  try {
    const item = await api(`/v1/items/${encodeURIComponent(itemId)}?space=${encodeURIComponent(space || "")}`);
    const meta = item.metadata || {};
    const preview = item.preview || {};
    body.replaceChildren(
      preview.thumbnailJpeg ? el("img", { src: "data:image/jpeg;base64," + preview.thumbnailJpeg, alt: meta.title || itemId }) : null,
      el("dl", {}, [
        ["id", item.itemId], ["space", item.space], ["modality", item.modality], ["version", item.itemVersion],
        ["title", meta.title], ["tags", (meta.tags || []).join(", ")], ["source", meta.source], ["link", meta.sourceUri],
      ].filter(([, v]) => v).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })])),
      preview.snippet ? el("p", { class: "snippet", text: preview.snippet }) : null,
    );
  } catch (error) {
    body.replaceChildren(el("p", { class: "error", text: "Could not load the item: " + error.message }));
  }
}

async function loadSpaces() {
  try {
    const answer = await api("/v1/spaces");
    const select = $("space");
    select.replaceChildren(el("option", { value: "", text: answer.defaultAlias || "default" }));
    for (const space of answer.spaces || []) {
      const aliases = (space.aliases || []).join(", ");
      select.appendChild(el("option", { value: space.id, text: aliases ? `${space.id} (${aliases})` : space.id }));
    }
  } catch (error) { /* a search-only token may not list spaces; the default still works */ }
}

async function loadStatus() {
  const box = $("status");
  box.replaceChildren(el("p", { text: "Loading…" }));
  try {
    const s = await api("/v1/index/status");
    const lag = (s.partitions || []).reduce((sum, p) => sum + Number(p.lag || 0), 0);
    const rows = (s.partitions || []).map((p) => el("tr", {}, [p.topic, p.partition, p.committedOffset, p.highwater, p.lag]
      .map((v) => el("td", { text: String(v === undefined ? 0 : v) }))));
    const letters = Object.entries(s.deadLettersByReason || {});
    box.replaceChildren(
      el("p", { id: "paused", text: s.paused ? `Paused: ${s.pauseReason}` : "Consuming" }),
      el("p", { text: `Topic ${s.topic}, group ${s.consumerGroup}, total lag ${lag}` }),
      el("table", {}, [
        el("caption", { text: "Partitions" }),
        el("thead", {}, [el("tr", {}, ["topic", "partition", "committed", "highwater", "lag"].map((h) => el("th", { scope: "col", text: h })))]),
        el("tbody", {}, rows),
      ]),
      el("h3", { text: "Dead letters by reason" }),
      letters.length
        ? el("ul", { id: "dlq" }, letters.map(([reason, count]) => el("li", { text: `${reason}: ${count}` })))
        : el("p", { text: "None since the indexer started." }),
      el("h3", { text: "Dead letters (your tenant, newest first)" }),
      el("div", { id: "dead-letters" }, [el("p", { text: "Loading…" })]),
      el("h3", { text: "Dependencies" }),
      el("ul", {}, (s.dependencies || []).map((d) => el("li", { text: `${d.name}: ${d.ready ? "ready" : "not ready: " + d.detail}` }))),
      el("h3", { text: "Spaces" }),
      el("ul", {}, (s.spaces || []).map((sp) => el("li", { text: `${sp.space}: ${sp.itemCount || 0} items` }))),
    );
    loadDeadLetters();
  } catch (error) {
    box.replaceChildren(el("p", { class: "error", text: "Status unavailable: " + error.message }));
  }
}

async function loadDeadLetters() {
  const box = $("dead-letters");
  if (!box) return;
  try {
    const answer = await api("/v1/index/dead-letters?limit=100");
    const letters = answer.letters || [];
    if (!letters.length) { box.replaceChildren(el("p", { text: "No dead letters for your tenant." })); return; }
    const columns = ["when", "reason", "event id", "item", "original size", "where", "detail"];
    box.replaceChildren(el("table", { class: "letters" }, [
      el("thead", {}, [el("tr", {}, columns.map((h) => el("th", { scope: "col", text: h })))]),
      el("tbody", {}, letters.map((l) => el("tr", {}, [
        l.deadLetteredAt || "", l.reason, l.eventId || "–", l.itemId || "–", `${l.originalSize || 0} B`,
        `${l.topic}[${l.partition || 0}]@${l.offset || 0}`, l.detail || "",
      ].map((v) => el("td", { text: String(v) }))))),
    ]));
  } catch (error) {
    box.replaceChildren(el("p", { class: "error", text: "Dead letters unavailable: " + error.message }));
  }
}

function searchWithFile(file) {
  if (!file) return;
  state.upload = file;
  state.request = requestFromForm();
  $("query").value = "";
  $("drop").textContent = `Searching with ${file.name || "the dropped file"}`;
  runSearch("");
}

function switchView(name) {
  for (const view of ["search", "ingest"]) {
    $("view-" + view).hidden = view !== name;
    $("tab-" + view).setAttribute("aria-pressed", String(view === name));
  }
  if (name === "ingest") loadStatus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("query").value.trim();
    if (!text) { showMessage("Type something to search for, or drop a file.", "info"); return; }
    state.upload = null;
    state.request = Object.assign(requestFromForm(), { query: { text } });
    runSearch("");
  });
  $("more").addEventListener("click", () => runSearch(state.nextPage));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    searchWithFile(event.dataTransfer.files[0]);
  });
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file").click(); }
  });
  $("file").addEventListener("change", () => searchWithFile($("file").files[0]));
  $("tab-search").addEventListener("click", () => switchView("search"));
  $("tab-ingest").addEventListener("click", () => switchView("ingest"));
  $("tab-token").addEventListener("click", () => askToken(""));
  $("refresh-status").addEventListener("click", loadStatus);
  $("token-form").addEventListener("submit", () => {
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    showMessage("");
    loadSpaces();
  });
  $("token-clear").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); $("token-input").value = ""; });
  if (!token()) askToken(""); else loadSpaces();
});

// Dataset studio, the core: the caption grid (autosave, keyboard, per-photo actions), the filter,
// search and selection, and what an edit of many photos targets. dataset_upload.js and
// dataset_bulk.js build on what it shares as window.FluxDataset; the template loads this first.
// Plain JS; the server renders cards and answers JSON.
(function () {
  const studio = document.getElementById("studio");
  if (!studio) return;
  const cfg = studio.dataset;
  const grid = document.getElementById("photo-grid");
  const $ = (id) => document.getElementById(id);

  // ---- small helpers ------------------------------------------------------------------
  // keepalive: the request outlives the page (a reload or a closed tab), like sendBeacon but
  // with the CSRF header.
  async function api(url, body, method, keepalive) {
    let res;
    try {
      res = await fetch(url, {
        method: method || "POST", credentials: "same-origin", keepalive: !!keepalive,
        headers: { "Content-Type": "application/json", "X-CSRFToken": cfg.csrf, Accept: "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      return { ok: false, error: "network error" };
    }
    let data = {};
    try { data = await res.json(); } catch (e) { data = { ok: false, error: `server answered ${res.status}` }; }
    if (!res.ok && data.ok === undefined) data.ok = false;
    return data;
  }
  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }
  function highlight(text, needle, caseSensitive) {
    const safe = escapeHtml(text);
    if (!needle) return safe;
    const pattern = new RegExp(escapeHtml(needle).replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), caseSensitive ? "g" : "gi");
    return safe.replace(pattern, (m) => `<mark>${m}</mark>`);
  }
  const cards = () => Array.from(grid.querySelectorAll(".photo-card"));
  const cardById = (id) => grid.querySelector(`.photo-card[data-id="${id}"]`);
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;  // "1 photo", "3 photos"
  function hasWord(text, word) {
    if (!word) return true;
    return new RegExp(`(^|[^\\w])${word.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&")}(?![\\w])`, "i").test(text);
  }
  function setCounts(counts) {
    if (counts) $("counter").textContent = `${counts.captioned} / ${counts.total} captioned`;
    refreshHealth();
  }
  let healthTimer = null;
  function refreshHealth() {
    clearTimeout(healthTimer);
    healthTimer = setTimeout(async () => {
      const box = $("health");
      const res = await fetch(box.dataset.url, { credentials: "same-origin" });
      if (res.ok) box.outerHTML = await res.text();
    }, 400);
  }

  // ---- caption grid: autosave, keyboard, per-card actions -----------------------------
  function setState(card, text, cls) {
    const el = card.querySelector(".save-state");
    el.className = `save-state ${cls || "muted"}`;
    el.textContent = text;
  }
  function initCard(card) {
    const box = card.querySelector("textarea.caption");
    box.dataset.saved = box.value;
  }
  // A caption not yet confirmed saved: typed (timer running), being saved, or refused.
  const unsaved = (card) => { const box = card.querySelector("textarea.caption"); return box.value !== box.dataset.saved; };
  // A caption changed elsewhere since this tab loaded it (another tab, a bulk edit elsewhere):
  // this tab's text stays in the box, the stored one is shown, and the person chooses. Until then
  // autosave waits; Keep mine (Ctrl/⌘+S) saves this text over it, Take theirs (Esc) takes it.
  function showConflict(card, stored) {
    const el = card.querySelector(".save-state");
    el.className = "save-state bad";
    el.textContent = `not saved: changed elsewhere to “${stored}”. `;
    for (const [cls, label] of [["keep-mine", "Keep mine"], ["take-theirs", "Take theirs"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = `link ${cls}`;
      button.textContent = label;
      el.append(button, " ");
    }
  }
  function takeTheirs(card) {
    const box = card.querySelector("textarea.caption");
    box.value = box.dataset.saved;
    box._conflict = false;
    clearTimeout(box._timer);
    setState(card, "changes undone");
  }
  // One save at a time per caption: a save waits for the one in flight, so that it starts from
  // what that one stored (two overlapping saves of one tab would otherwise look like a conflict).
  // `explicit`: Keep mine / Ctrl+S, the only way past a conflict.
  async function save(card, keepalive, explicit) {
    const box = card.querySelector("textarea.caption");
    clearTimeout(box._timer);
    if (box._inflight && !keepalive) await box._inflight.catch(() => null);
    if (box.value === box.dataset.saved) { box._conflict = false; return; }
    if (box._conflict && !explicit) return;
    const sent = box.value;
    if (keepalive && box._flushing === sent) return;  // hidden, then pagehide: send once
    if (keepalive) box._flushing = sent;
    setState(card, "saving…");
    // leaving while a save is in flight: this one starts from what that one is storing
    const was = keepalive && box._inflight ? box._inflightSent : box.dataset.saved;
    const request = api(cfg.captionUrl.replace("/0/", `/${card.dataset.id}/`), { caption: sent, was }, "POST", keepalive);
    box._inflight = request;  // a keepalive one too: the page may stay (a tab switch), and saves go on from it
    box._inflightSent = sent;
    const data = await request;
    if (box._inflight === request) box._inflight = null;
    if (box._flushing === sent) box._flushing = null;
    if (data.conflict) {
      box._conflict = true;
      box.dataset.saved = data.photo.caption;
      card.dataset.source = data.photo.caption_source;
      showConflict(card, data.photo.caption);
      return;
    }
    if (!data.ok) { setState(card, `not saved: ${data.error || "try again"}`, "bad"); return; }
    box._conflict = false;
    box.dataset.saved = data.photo.caption;
    card.dataset.source = data.photo.caption_source;
    if (box.value === sent) box.value = data.photo.caption;  // the server tidies whitespace
    setState(card, box.value === box.dataset.saved ? "saved ✓" : "editing…", box.value === box.dataset.saved ? "ok" : "muted");
    setCounts(data.counts);
  }
  cards().forEach(initCard);
  // Leaving within the autosave delay (reload, closed tab, another tab) must not lose an edit:
  // send what is unsaved with keepalive, and warn while a save is pending or was refused.
  function flushCaptions() { for (const card of cards()) if (unsaved(card)) save(card, true); }
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "hidden") flushCaptions(); });
  window.addEventListener("pagehide", flushCaptions);
  window.addEventListener("beforeunload", (e) => {
    if (!cards().some(unsaved)) return;
    flushCaptions();
    e.preventDefault();
    e.returnValue = "";  // what older browsers need to ask
  });
  grid.addEventListener("input", (e) => {
    if (!e.target.matches("textarea.caption")) return;
    const card = e.target.closest(".photo-card");
    if (e.target._conflict) {  // the choice stays on screen while the person edits
      if (e.target.value === e.target.dataset.saved) takeTheirs(card);
      return;
    }
    setState(card, "editing…");
    clearTimeout(e.target._timer);
    e.target._timer = setTimeout(() => save(card), 800);
  });
  grid.addEventListener("focusout", (e) => { if (e.target.matches("textarea.caption")) save(e.target.closest(".photo-card")); });
  grid.addEventListener("keydown", (e) => {
    if (!e.target.matches("textarea.caption")) return;
    const card = e.target.closest(".photo-card");
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") { e.preventDefault(); save(card, false, true); }
    else if (e.key === "Escape") takeTheirs(card);
    else if (e.altKey && (e.key === "ArrowDown" || e.key === "ArrowUp")) {
      // Caption to caption; Tab stays native so the select box and the per-photo buttons can
      // be reached from the keyboard.
      const boxes = cards().filter((c) => !c.hidden).map((c) => c.querySelector("textarea.caption"));
      const next = boxes[boxes.indexOf(e.target) + (e.key === "ArrowUp" ? -1 : 1)];
      if (next) { e.preventDefault(); next.focus(); }
    }
  });
  grid.addEventListener("click", async (e) => {
    const card = e.target.closest(".photo-card");
    if (!card) return;
    if (e.target.matches(".keep-mine")) { save(card, false, true); return; }
    if (e.target.matches(".take-theirs")) { takeTheirs(card); return; }
    if (e.target.matches(".delete-photo")) {
      if (!confirm("Delete this photo from the dataset?")) return;
      const data = await api(cfg.actionUrl, { action: "delete", ids: [Number(card.dataset.id)] });
      if (data.ok) { card.remove(); setCounts(data.counts); updateSelection(); $("grid-empty").hidden = cards().length > 0; }
    } else if (e.target.matches(".toggle-exclude")) {
      const exclude = card.dataset.excluded !== "1";
      const data = await api(cfg.actionUrl, { action: exclude ? "exclude" : "include", ids: [Number(card.dataset.id)] });
      if (data.ok) { markExcluded(card, exclude); setCounts(data.counts); }
    }
  });
  function markExcluded(card, excluded) {
    card.dataset.excluded = excluded ? "1" : "0";
    card.classList.toggle("excluded", excluded);
    const toggle = card.querySelector(".toggle-exclude");
    toggle.textContent = excluded ? "Include" : "Exclude";
    toggle.setAttribute("aria-label", `${toggle.textContent} ${toggle.dataset.name}`);  // which photo, for a screen reader
  }

  // ---- filter, search with highlights, selection --------------------------------------
  function applyFilter() {
    const mode = $("filter").value;
    const needle = $("search").value.trim();
    const trigger = $("id_trigger_word").dataset.saved || "";
    for (const card of cards()) {
      const text = card.querySelector("textarea.caption").value;
      let show = mode === "all" || (mode === "missing" && !text.trim()) || (mode === "excluded" && card.dataset.excluded === "1")
        || (mode === "notrigger" && text.trim() && !hasWord(text, trigger));
      if (needle) show = show && text.toLowerCase().includes(needle.toLowerCase());
      card.hidden = !show;
      const match = card.querySelector(".match");
      match.hidden = !needle || !show;
      if (needle && show) match.innerHTML = highlight(text, needle, false);
    }
    updateSelection();
  }
  $("filter").addEventListener("change", applyFilter);
  $("search").addEventListener("input", applyFilter);
  const shown = () => cards().filter((c) => !c.hidden);
  const ticked = (c) => c.querySelector(".select").checked;
  const idOf = (c) => Number(c.dataset.id);
  function selectedIds() {
    // Only ticked photos that are shown: one a search or filter hides is left out of every
    // action (its tick counts again once it is shown). null: nothing is selected.
    const ids = shown().filter(ticked).map(idOf);
    return ids.length ? ids : null;
  }
  // Every photo, whatever is shown or ticked (null ids: all, as the API reads it).
  const allPhotos = () => ({ ids: null, label: `all ${plural(cards().length, "photo")}` });
  function bulkTarget() {
    // What the bulk bar edits and Auto-caption captions: the selection; with none, the photos
    // shown while a search or filter is on, and all photos only when none is.
    const ids = selectedIds();
    if (ids) return { ids, label: `the ${plural(ids.length, "photo")} selected` };
    if ($("filter").value !== "all" || $("search").value.trim()) {
      const visible = shown().map(idOf);
      return { ids: visible, label: `the ${plural(visible.length, "photo")} shown` };
    }
    return allPhotos();
  }
  function updateSelection() {
    const ids = selectedIds();
    const hidden = cards().filter((c) => c.hidden && ticked(c)).length;
    $("selected-count").textContent = `${ids ? ids.length : 0} selected` + (hidden ? ` (${hidden} more hidden by the search or filter, left out)` : "");
    // Both buttons that act on many photos name their scope, so "shown" is never read as "all".
    const target = bulkTarget();
    $("bulk-scope").textContent = `(acts on ${target.label})`;
    $("auto-caption").textContent = target.ids ? `Auto-caption ${target.label}` : "Auto-caption";
  }
  // The first tick opens "Edit many captions", where the actions on the selection are (Exclude,
  // Include, Delete, and the caption edits); later ticks leave it as the person set it.
  function selectionChanged() {
    const before = $("selected-count").textContent.startsWith("0 ");
    updateSelection();
    if (before && selectedIds()) $("bulk").open = true;
  }
  grid.addEventListener("change", (e) => { if (e.target.matches(".select")) selectionChanged(); });
  $("select-all").addEventListener("change", (e) => {
    cards().forEach((c) => { c.querySelector(".select").checked = e.target.checked && !c.hidden; });
    selectionChanged();
  });
  updateSelection();

  window.FluxDataset = {
    cfg, grid, $, api, escapeHtml, highlight, cards, cardById, plural, setCounts, refreshHealth, setState, initCard,
    markExcluded, applyFilter, selectedIds, allPhotos, bulkTarget,
  };
})();

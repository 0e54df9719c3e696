// Dataset studio: per-file uploads, the caption grid (autosave, filter, bulk edits with undo),
// the trigger word and live auto-captions. Plain JS; the server renders cards and answers JSON.
(function () {
  const studio = document.getElementById("studio");
  if (!studio) return;
  const cfg = studio.dataset;
  const grid = document.getElementById("photo-grid");
  const $ = (id) => document.getElementById(id);
  const CONCURRENCY = 3;

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

  // ---- uploads: one XHR per file, a few at a time, each with progress and retry ----------
  const queue = [];
  let active = 0;
  function addFiles(files) {
    for (const file of files) {
      const row = document.createElement("li");
      row.className = "upload";
      row.innerHTML = `<span class="upload-name"></span><progress max="100" value="0" aria-label="Upload progress"></progress>
        <span class="upload-status muted">waiting</span><div class="upload-detail"></div>`;
      row.querySelector(".upload-name").textContent = file.name;
      $("uploads").prepend(row);
      queue.push({ file, row });
    }
    pump();
  }
  function pump() {
    while (active < CONCURRENCY && queue.length) send(queue.shift());
  }
  function send(item) {
    const { file, row } = item;
    // A photo over the limit is refused here, before its bytes travel (the server checks it
    // again); a zip has its own, larger limit, so it is left to the server.
    const limit = Number(cfg.maxMb) * 1048576;
    if (limit && file.size > limit && !/\.zip$/i.test(file.name)) {
      showResults(row, { results: [{ ok: false, name: file.name,
        reason: `${(file.size / 1048576).toFixed(1)} MB is over the ${cfg.maxMb} MB limit per photo` }] });
      pump();
      return;
    }
    active += 1;
    const status = row.querySelector(".upload-status");
    const bar = row.querySelector("progress");
    row.className = "upload sending";
    status.textContent = "uploading…";
    const form = new FormData();
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", cfg.uploadUrl);
    xhr.setRequestHeader("X-CSRFToken", cfg.csrf);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) { bar.value = Math.round((e.loaded / e.total) * 100); status.textContent = `${bar.value}%`; }
    };
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (e) { /* not JSON: a proxy or server error */ }
      if (data && data.results) showResults(row, data);
      else failed(item, `server error ${xhr.status}`);
    };
    xhr.onerror = () => failed(item, "network error");
    xhr.onloadend = () => { active -= 1; pump(); };
    xhr.send(form);
  }
  function failed(item, why) {
    const { row } = item;
    row.className = "upload failed";
    row.querySelector(".upload-status").textContent = `failed: ${why}`;
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "small secondary retry";
    retry.textContent = "Retry";
    retry.setAttribute("aria-label", `Retry ${item.file.name}`);
    retry.onclick = () => { retry.remove(); queue.push(item); row.querySelector(".upload-status").textContent = "waiting"; pump(); };
    row.querySelector(".upload-detail").replaceChildren(retry);
  }
  function showResults(row, data) {
    const accepted = data.results.filter((r) => r.ok);
    const rejected = data.results.filter((r) => !r.ok);
    row.querySelector("progress").value = 100;
    row.className = `upload ${accepted.length ? "done" : "rejected"}`;
    const status = row.querySelector(".upload-status");
    status.textContent = data.results.length > 1 ? `${accepted.length} added, ${rejected.length} skipped`
      : accepted.length ? "added" : "rejected";
    const detail = row.querySelector(".upload-detail");
    detail.replaceChildren();
    for (const r of data.results) {
      const line = document.createElement("div");
      line.className = r.ok ? "result ok" : "result bad reason";
      if (r.ok) {
        line.innerHTML = `<img class="mini" alt="" src="${escapeHtml(r.photo.thumbnail_url)}"> <span></span>`;
        line.querySelector("span").textContent = (data.results.length > 1 ? r.name + ": " : "") + (r.warnings.length ? "⚠ " + r.warnings.join("; ") : "ok");
        grid.insertAdjacentHTML("beforeend", r.html);
        initCard(grid.lastElementChild);
      } else {
        line.textContent = (data.results.length > 1 ? r.name + ": " : "") + r.reason;
      }
      detail.append(line);
    }
    $("grid-empty").hidden = cards().length > 0;
    setCounts(data.counts);
    applyFilter();
  }
  const drop = $("dropzone");
  const picker = $("file-input");
  picker.addEventListener("change", () => { addFiles(picker.files); picker.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); addFiles(e.dataTransfer.files); });

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
  async function save(card, keepalive) {
    const box = card.querySelector("textarea.caption");
    clearTimeout(box._timer);
    if (box.value === box.dataset.saved) return;
    const sent = box.value;
    if (keepalive && box._flushing === sent) return;  // hidden, then pagehide: send once
    if (keepalive) box._flushing = sent;
    setState(card, "saving…");
    const data = await api(cfg.captionUrl.replace("/0/", `/${card.dataset.id}/`), { caption: sent }, "POST", keepalive);
    if (box._flushing === sent) box._flushing = null;
    if (!data.ok) { setState(card, `not saved: ${data.error || "try again"}`, "bad"); return; }
    box.dataset.saved = data.photo.caption;
    card.dataset.source = data.photo.caption_source;
    if (box.value === sent) box.value = data.photo.caption;  // the server tidies whitespace
    setState(card, "saved ✓", "ok");
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
    setState(card, "editing…");
    clearTimeout(e.target._timer);
    e.target._timer = setTimeout(() => save(card), 800);
  });
  grid.addEventListener("focusout", (e) => { if (e.target.matches("textarea.caption")) save(e.target.closest(".photo-card")); });
  grid.addEventListener("keydown", (e) => {
    if (!e.target.matches("textarea.caption")) return;
    const card = e.target.closest(".photo-card");
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") { e.preventDefault(); save(card); }
    else if (e.key === "Escape") { e.target.value = e.target.dataset.saved; clearTimeout(e.target._timer); setState(card, "changes undone"); }
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
    card.querySelector(".toggle-exclude").textContent = excluded ? "Include" : "Exclude";
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
  const photosText = (n) => `${n} photo${n === 1 ? "" : "s"}`;
  function selectedIds() {
    // Only ticked photos that are shown: one a search or filter hides is left out of every
    // action (its tick counts again once it is shown). null: nothing is selected.
    const ids = shown().filter(ticked).map(idOf);
    return ids.length ? ids : null;
  }
  function bulkTarget() {
    // What the bulk bar edits: the selection; with none, the photos shown while a search or
    // filter is on, and all photos only when none is (null ids: all, as the API reads it).
    const ids = selectedIds();
    if (ids) return { ids, label: `the ${photosText(ids.length)} selected` };
    if ($("filter").value !== "all" || $("search").value.trim()) {
      const visible = shown().map(idOf);
      return { ids: visible, label: `the ${photosText(visible.length)} shown` };
    }
    return { ids: null, label: `all ${photosText(cards().length)}` };
  }
  function updateSelection() {
    const ids = selectedIds();
    const hidden = cards().filter((c) => c.hidden && ticked(c)).length;
    $("selected-count").textContent = `${ids ? ids.length : 0} selected` + (hidden ? ` (${hidden} more hidden by the search or filter, left out)` : "");
    $("bulk-scope").textContent = `(acts on ${bulkTarget().label})`;
  }
  grid.addEventListener("change", (e) => { if (e.target.matches(".select")) updateSelection(); });
  $("select-all").addEventListener("change", (e) => {
    cards().forEach((c) => { c.querySelector(".select").checked = e.target.checked && !c.hidden; });
    updateSelection();
  });
  updateSelection();

  // ---- bulk edits with preview and undo -----------------------------------------------
  function applyChanges(changes, sources) {
    for (const ch of changes) {
      const card = cardById(ch.id);
      if (!card) continue;
      const box = card.querySelector("textarea.caption");
      box.value = box.dataset.saved = ch.after;
      if (sources && sources[ch.id]) card.dataset.source = sources[ch.id];
      setState(card, "changed", "ok");
    }
    applyFilter();
  }
  function showBulk(html) { $("bulk-result").innerHTML = html; }
  async function bulk(op, extra, label) {
    // extra.ids null: a button meant for every photo (the template, the trigger word)
    const target = extra.ids === null ? { ids: null, label: `all ${photosText(cards().length)}` } : bulkTarget();
    if (target.ids && !target.ids.length) { showBulk('<p class="warn">No photos are shown: nothing to edit.</p>'); return null; }
    const body = Object.assign({ op, ids: target.ids }, extra);
    const data = await api(cfg.bulkUrl, body);
    if (!data.ok) { showBulk(`<p class="bad" role="alert">${escapeHtml(data.error)}</p>`); return null; }
    data.target = target;
    if (body.dry_run) return data;
    applyChanges(data.changes);
    setCounts(data.counts);
    const undoable = data.changes.length > 0;
    showBulk(`<p class="ok">${escapeHtml(label)} (${escapeHtml(target.label)}): ${data.changes.length} caption${data.changes.length === 1 ? "" : "s"} changed.
      ${undoable ? '<button type="button" class="small secondary" id="undo">Undo</button>' : ""}</p>`);
    if (undoable) $("undo").onclick = () => undo(data.changes);
    return data;
  }
  async function undo(changes) {
    const captions = {};
    const sources = {};  // the source each caption had, so an undone auto caption stays auto
    const expected = {};  // what the edit left: a caption edited since then keeps the newer text
    for (const ch of changes) { captions[ch.id] = ch.before; sources[ch.id] = ch.before_source; expected[ch.id] = ch.after; }
    const data = await api(cfg.restoreUrl, { captions, sources, expected });
    if (!data.ok) { showBulk(`<p class="bad">${escapeHtml(data.error)}</p>`); return; }
    applyChanges(data.changes, sources);
    setCounts(data.counts);
    const kept = data.kept.length;
    showBulk(`<p class="muted">Undone: ${data.changes.length} caption${data.changes.length === 1 ? "" : "s"} restored.` +
      (kept ? ` ${kept} caption${kept === 1 ? " was" : "s were"} changed since the edit and kept as ${kept === 1 ? "it is" : "they are"}.` : "") + "</p>");
  }
  const replaceArgs = () => ({ find: $("find").value, replace: $("replace").value, case_sensitive: $("case").checked });
  $("preview-replace").onclick = async () => {
    const data = await bulk("replace", Object.assign({ dry_run: true }, replaceArgs()));
    if (!data) return;
    const args = replaceArgs();
    const rows = data.changes.slice(0, 50).map((ch) => `<li><span class="before">${highlight(ch.before, args.find, args.case_sensitive)}</span>
      → <span class="after">${highlight(ch.after, args.replace, args.case_sensitive)}</span></li>`).join("");
    showBulk(`<p><strong>${data.changes.length}</strong> caption${data.changes.length === 1 ? "" : "s"} would change (${escapeHtml(data.target.label)}).</p><ul class="preview">${rows}</ul>`);
  };
  $("apply-replace").onclick = () => bulk("replace", replaceArgs(), "Replaced");
  $("prepend").onclick = () => bulk("prepend", { text: $("affix").value }, "Prepended");
  $("append").onclick = () => bulk("append", { text: $("affix").value }, "Appended");
  $("fill-template").onclick = () => { $("bulk").open = true; bulk("template", { ids: null }, "Template captions"); };
  async function selectedAction(action) {
    const ids = selectedIds();
    if (!ids) { showBulk('<p class="warn">Select photos first.</p>'); return; }
    if (action === "delete" && !confirm(`Delete ${ids.length} photo${ids.length === 1 ? "" : "s"}?`)) return;
    const data = await api(cfg.actionUrl, { action, ids });
    if (!data.ok) return;
    for (const id of ids) {
      const card = cardById(id);
      if (action === "delete") card.remove(); else markExcluded(card, action === "exclude");
    }
    setCounts(data.counts);
    applyFilter();
  }
  $("exclude-selected").onclick = () => selectedAction("exclude");
  $("include-selected").onclick = () => selectedAction("include");
  $("delete-selected").onclick = () => selectedAction("delete");

  // ---- trigger word: advice as you type, save, insert into captions --------------------
  const trigger = $("id_trigger_word");
  trigger.dataset.saved = trigger.value;
  // Each advice request and each save takes a ticket; an answer whose ticket is no longer the
  // newest is dropped, so slow advice for what was typed never hides a later "Saved.".
  let adviceTimer = null;
  let adviceTicket = 0;
  trigger.addEventListener("input", () => {
    clearTimeout(adviceTimer);
    const ticket = ++adviceTicket;
    adviceTimer = setTimeout(async () => {
      const data = await api(`${cfg.triggerUrl}?word=${encodeURIComponent(trigger.value)}`, undefined, "GET");
      if (ticket !== adviceTicket) return;
      const verdict = [...(data.errors || []).map((t) => `<p class="bad">${escapeHtml(t)}</p>`),
        ...(data.warnings || []).map((t) => `<p class="warn">${escapeHtml(t)}</p>`)].join("")
        || (trigger.value ? '<p class="ok">Looks like a good trigger word.</p>' : "");
      $("trigger-advice").innerHTML = verdict + tokenNotes(data);
    }, 250);
  });
  // How the base model's tokenizers split the word (or why a word list was used instead).
  const tokenNotes = (data) => (data.notes || []).map((t) => `<p class="hint token-note">${escapeHtml(t)}</p>`).join("");
  async function saveStyle() {
    clearTimeout(adviceTimer);
    const ticket = ++adviceTicket;
    $("trigger-advice").innerHTML = `<p class="hint">Saving…</p>`;
    const res = await fetch(cfg.styleUrl, { method: "POST", body: new FormData($("style-form")), credentials: "same-origin",
      headers: { "X-CSRFToken": cfg.csrf, Accept: "application/json" } });
    const data = await res.json();
    if (ticket !== adviceTicket) return data.ok;
    if (!data.ok) { $("trigger-advice").innerHTML = `<p class="bad" role="alert">${escapeHtml(data.error)}</p>`; return false; }
    trigger.dataset.saved = data.trigger_word;
    $("fill-template").title = data.template_caption;
    $("trigger-advice").innerHTML = `<p class="ok">Saved.</p>` + data.warnings.map((t) => `<p class="warn">${escapeHtml(t)}</p>`).join("")
      + tokenNotes(data);
    refreshHealth();
    applyFilter();
    return true;
  }
  $("style-form").addEventListener("submit", (e) => { e.preventDefault(); saveStyle(); });
  $("insert-trigger").onclick = async () => {
    if (trigger.value !== trigger.dataset.saved && !(await saveStyle())) return;
    $("bulk").open = true;
    bulk("insert_trigger", { ids: null }, "Trigger word added");
  };

  // ---- auto-captions: queue, then fill the grid live -----------------------------------
  function status(text, cls, offerTemplate) {
    const box = $("caption-status");
    box.hidden = false;
    box.className = `status ${cls || ""}`;
    box.textContent = text;
    if (offerTemplate) {  // the same button the page renders for a failure it loads with
      const b = document.createElement("button");
      b.type = "button"; b.className = "small use-template"; b.textContent = "Fill empty captions with the template";
      box.append(" ", b);
    }
  }
  $("caption-status").addEventListener("click", (e) => { if (e.target.matches(".use-template")) $("fill-template").click(); });
  $("auto-caption").onclick = async () => {
    // The same photos as the bulk bar: ticked ones a search hides are never captioned, and a
    // search or filter narrows "all" to what is shown (overwrite then touches only those).
    const target = bulkTarget();
    if (target.ids && !target.ids.length) { status("No photos are shown: nothing to caption.", "warn"); return; }
    const data = await api(cfg.autoUrl, { ids: target.ids, overwrite: $("overwrite").checked });
    if (!data.ok) status(data.error, "bad"); else status(`Captioning is queued for ${target.label}…`, "muted");
  };
  let done = 0;
  if (window.FluxLive) {
    FluxLive.watch("dataset", cfg.dataset, {
      caption: (d) => {
        const card = cardById(d.photo_id);
        if (!card) return;
        const box = card.querySelector("textarea.caption");
        if (d.error) { setState(card, `caption failed: ${d.error}`, "bad"); return; }
        // Never clobber what the person is typing right now.
        if (document.activeElement !== box || box.value === box.dataset.saved) box.value = d.caption;
        box.dataset.saved = d.caption;
        card.dataset.source = d.source;
        setState(card, d.source === "auto" ? "auto caption" : "your caption kept", "ok");
        done += 1;
        applyFilter();
        refreshCounter();
        refreshHealth();
      },
      captioning: (d) => {
        if (d.state === "started") { done = 0; status(d.message, "muted"); }
        else if (d.state === "unavailable") status(d.message, "bad", true);
        else if (d.state === "failed") status(d.message, "bad", true);
        else if (d.state === "finished") { status(d.message, "ok"); refreshCounter(); }
        else status(d.message, "muted");
      },
    }, { after: Number(cfg.lastEvent || 0) });
  }
  function refreshCounter() {  // counted here: every caption is already in the grid
    const used = cards().filter((c) => c.dataset.excluded !== "1");
    const captioned = used.filter((c) => c.querySelector("textarea.caption").value.trim()).length;
    $("counter").textContent = `${captioned} / ${used.length} captioned`;
  }
})();

// Dataset studio, edits of many captions at once: the bulk bar (preview, undo), the selection's
// exclude / include / delete, the trigger word, and live auto-captions. Needs dataset.js
// (window.FluxDataset).
(function () {
  if (!window.FluxDataset) return;
  const { cfg, $, api, escapeHtml, highlight, cards, cardById, plural, setCounts, refreshHealth, setState,
    markExcluded, applyFilter, selectedIds, allPhotos, bulkTarget } = window.FluxDataset;

  // ---- bulk edits with preview and undo -----------------------------------------------
  function applyChanges(changes, sources) {
    for (const ch of changes) {
      const card = cardById(ch.id);
      if (!card) continue;
      const box = card.querySelector("textarea.caption");
      box.value = box.dataset.saved = ch.after;
      box._conflict = false;
      if (sources && sources[ch.id]) card.dataset.source = sources[ch.id];
      setState(card, "changed", "ok");
    }
    applyFilter();
  }
  function showBulk(html) { $("bulk-result").innerHTML = html; }
  async function bulk(op, extra, label) {
    // extra.ids null: a button meant for every photo (the template, the trigger word)
    const target = extra.ids === null ? allPhotos() : bulkTarget();
    if (target.ids && !target.ids.length) { showBulk('<p class="warn">No photos are shown: nothing to edit.</p>'); return null; }
    const body = Object.assign({ op, ids: target.ids }, extra);
    const data = await api(cfg.bulkUrl, body);
    if (!data.ok) { showBulk(`<p class="bad" role="alert">${escapeHtml(data.error)}</p>`); return null; }
    data.target = target;
    if (body.dry_run) return data;
    applyChanges(data.changes);
    setCounts(data.counts);
    const undoable = data.changes.length > 0;
    showBulk(`<p class="ok">${escapeHtml(label)} (${escapeHtml(target.label)}): ${plural(data.changes.length, "caption")} changed.
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
    showBulk(`<p class="muted">Undone: ${plural(data.changes.length, "caption")} restored.` +
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
    if (action === "delete" && !confirm(`Delete ${plural(ids.length, "photo")}?`)) return;
    const data = await api(cfg.actionUrl, { action, ids });
    if (!data.ok) { showBulk(`<p class="bad" role="alert">${escapeHtml(data.error || "not done: try again")}</p>`); return; }
    for (const id of ids) {
      const card = cardById(id);
      if (action === "delete") card.remove(); else markExcluded(card, action === "exclude");
    }
    setCounts(data.counts);
    applyFilter();
    // says what happened, and replaces an earlier edit's result (its Undo no longer applies to this)
    const done = { exclude: "Excluded from training", include: "Included in training", delete: "Deleted" }[action];
    showBulk(`<p class="ok" role="status">${done}: ${plural(ids.length, "photo")}.</p>`);
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
    // The same photos as the bulk bar (the button's label names them): ticked ones a search
    // hides are never captioned, and a search or filter narrows "all" to what is shown
    // (overwrite then touches only those).
    const target = bulkTarget();
    if (target.ids && !target.ids.length) { status("No photos are shown: nothing to caption.", "warn"); return; }
    const data = await api(cfg.autoUrl, { ids: target.ids, overwrite: $("overwrite").checked });
    if (!data.ok) status(data.error, "bad"); else status(`Captioning is queued for ${target.label}…`, "muted");
  };
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
        if (box.value === d.caption) box._conflict = false;
        card.dataset.source = d.source;
        setState(card, d.source === "auto" ? "auto caption" : "your caption kept", "ok");
        applyFilter();
        refreshCounter();
        refreshHealth();
      },
      captioning: (d) => {
        if (d.state === "unavailable" || d.state === "failed") status(d.message, "bad", true);
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

// Launch page: each preset's explanation and figures follow the chosen base model, and the time
// estimate that ends the figures follows the chosen memory mode. The server draws them for one
// base (?base_model= picks another without JavaScript) and the selected mode, and embeds every
// offered base's, each with its figures per memory mode, so a change of either swaps the text in place.
(function () {
  const data = document.getElementById("launch-presets");
  const baseSelect = document.getElementById("base_model");
  const modeSelect = document.getElementById("memory_mode");
  if (!data || !baseSelect) return;
  const summaries = JSON.parse(data.textContent);

  function showPresets() {
    const presets = summaries[baseSelect.value];
    if (!presets) return;
    for (const [key, summary] of Object.entries(presets)) {
      const byMode = summary.figures_by_memory_mode || {};
      document.getElementById(`preset-${key}-explanation`).textContent = summary.explanation;
      document.getElementById(`preset-${key}-figures`).textContent =
        (modeSelect && byMode[modeSelect.value]) || summary.figures;
    }
  }

  // Captions longer than the chosen base reads: a warning per base, empty when they fit.
  const room = JSON.parse((document.getElementById("launch-caption-room") || {}).textContent || "{}");
  function showCaptionRoom() {
    const note = document.getElementById("caption-room");
    if (!note) return;
    note.textContent = room[baseSelect.value] || "";
    note.hidden = !note.textContent;
  }

  baseSelect.addEventListener("change", showCaptionRoom);
  showCaptionRoom();
  baseSelect.addEventListener("change", showPresets);
  if (modeSelect) modeSelect.addEventListener("change", showPresets);
  showPresets();  // a base or mode the browser restored (back button, reload) may not be the one drawn
})();

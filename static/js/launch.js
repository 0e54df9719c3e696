// Launch page: each preset's explanation and figures follow the chosen base model. The server
// draws them for one base (?base_model= picks another without JavaScript) and embeds every
// offered base's, so a change of base swaps the text in place.
(function () {
  const data = document.getElementById("launch-presets");
  const baseSelect = document.getElementById("base_model");
  if (!data || !baseSelect) return;
  const summaries = JSON.parse(data.textContent);

  function showPresets() {
    const presets = summaries[baseSelect.value];
    if (!presets) return;
    for (const [key, summary] of Object.entries(presets)) {
      document.getElementById(`preset-${key}-explanation`).textContent = summary.explanation;
      document.getElementById(`preset-${key}-figures`).textContent = summary.figures;
    }
  }

  baseSelect.addEventListener("change", showPresets);
  showPresets();  // a base the browser restored (back button, reload) may not be the one drawn
})();

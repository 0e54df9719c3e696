// The trainings list: each running or queued row follows its training live (state and step),
// from the events after the page was drawn, and stops listening once the training has ended.
(function () {
  const table = document.querySelector("table.jobs");
  if (!table || !window.FluxLive) return;
  const after = Number(table.dataset.eventsAfter) || 0;
  const FINAL = ["succeeded", "failed", "canceled"];
  const LABELS = {queued: "Queued", starting: "Starting", training: "Training",
                  succeeded: "Succeeded", failed: "Failed", canceled: "Canceled"};

  table.querySelectorAll("tr[data-job]").forEach((row) => {
    if (FINAL.includes(row.dataset.state)) return;
    const badge = row.querySelector(".badge");
    const progress = row.querySelector(".job-progress");
    const watcher = FluxLive.watch("training", row.dataset.job, {
      state(data) {
        row.dataset.state = data.state;
        badge.className = "badge " + data.state;
        badge.textContent = LABELS[data.state] || data.state;
        if (data.step != null && data.total) progress.textContent = `${data.step} / ${data.total}`;
        if (FINAL.includes(data.state)) watcher.close();
      },
      progress(data) {
        progress.textContent = `${data.step} / ${data.total}`;
      },
    }, {after});
  });
})();

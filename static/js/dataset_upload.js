// Dataset studio, uploads: one XHR per file, a few at a time, each with its progress, its
// verdict and a retry; accepted photos join the grid. Needs dataset.js (window.FluxDataset).
(function () {
  if (!window.FluxDataset) return;
  const { cfg, grid, $, escapeHtml, cards, initCard, setCounts, applyFilter } = window.FluxDataset;
  const CONCURRENCY = 3;

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
})();

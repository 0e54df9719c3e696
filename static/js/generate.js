// Generation page: per-base defaults, LoRA rows with trigger words, and the live result panel.
(function () {
  const bases = JSON.parse(document.getElementById("gen-bases").textContent);
  const form = document.getElementById("gen-form");
  const baseSelect = document.getElementById("id_base_model");
  const sizeSelect = document.getElementById("id_size");
  const rows = document.getElementById("lora-rows");
  const prompt = document.getElementById("id_prompt");

  function fillSizes(base, wanted) {
    const info = bases[base];
    sizeSelect.innerHTML = "";
    let found = false;
    for (const s of info.sizes) {
      const opt = new Option(s.label, s.value);
      if (s.value === wanted) { opt.selected = true; found = true; }
      sizeSelect.add(opt);
    }
    if (!found && wanted) {  // a size from an earlier generation that no preset matches
      const opt = new Option(wanted.replace("x", "×") + " (custom)", wanted, true, true);
      sizeSelect.add(opt);
    }
  }

  function applyBase(base, resetValues) {
    const info = bases[base];
    fillSizes(base, resetValues ? `${info.width}x${info.height}` : sizeSelect.dataset.value);
    if (resetValues) {
      form.steps.value = info.steps;
      form.guidance.value = info.guidance;
    }
    document.getElementById("guidance-field").hidden = !info.uses_guidance;
    document.getElementById("base-hint").textContent = info.uses_guidance ? "" : `${base} has no guidance embedding: guidance is ignored.`;
    // A LoRA only fits the base it was trained on. One already chosen for another base is taken
    // out, and the page says so: a disabled option stays on show but is never sent, so the
    // images would come without it while the row still named it.
    const left = [];
    for (const select of rows.querySelectorAll(".lora-select")) {
      for (const opt of select.querySelectorAll("option[data-base]")) opt.disabled = opt.dataset.base !== base;
      const chosen = select.selectedOptions[0];
      if (chosen && chosen.disabled) {
        left.push(`${chosen.dataset.label}, trained on ${chosen.dataset.base}`);
        select.value = "";
      }
    }
    document.getElementById("lora-note").textContent =
      left.length ? `Left out, as it does not fit ${base}: ${left.join("; ")}.` : "";
  }

  function triggerHints() {
    const hints = document.getElementById("trigger-hints");
    hints.innerHTML = "";
    for (const select of rows.querySelectorAll(".lora-select")) {
      const opt = select.selectedOptions[0];
      if (!opt || !opt.dataset.trigger) continue;
      const word = opt.dataset.trigger;
      const has = prompt.value.toLowerCase().includes(word.toLowerCase());
      const button = document.createElement("button");
      button.type = "button";
      button.className = "chip" + (has ? " used" : "");
      button.textContent = has ? `✓ ${word}` : `+ ${word}`;
      button.title = has ? "The prompt has this trigger word" : "Add the trigger word to the prompt";
      button.addEventListener("click", () => {
        if (!prompt.value.toLowerCase().includes(word.toLowerCase())) {
          prompt.value = prompt.value.trim() ? `${prompt.value.trim()}, ${word}` : `a photo of ${word}`;
          triggerHints();
        }
      });
      hints.append(button);
    }
  }

  rows.addEventListener("change", (e) => {
    if (e.target.classList.contains("lora-select")) {
      document.getElementById("lora-note").textContent = "";
      const opt = e.target.selectedOptions[0];
      if (opt && opt.dataset.base && opt.dataset.base !== baseSelect.value) {
        baseSelect.value = opt.dataset.base;
        applyBase(opt.dataset.base, true);
      }
      triggerHints();
    }
  });
  rows.addEventListener("click", (e) => {
    if (!e.target.classList.contains("remove-lora")) return;
    const row = e.target.closest(".lora-row");
    if (rows.children.length > 1) row.remove(); else { row.querySelector("select").value = ""; }
    triggerHints();
  });
  document.getElementById("add-lora").addEventListener("click", () => {
    if (rows.children.length >= 4) return;
    const row = rows.firstElementChild.cloneNode(true);
    row.querySelector("select").value = "";
    row.querySelector(".scale").value = "1.0";
    rows.append(row);
  });
  baseSelect.addEventListener("change", () => applyBase(baseSelect.value, true));
  prompt.addEventListener("input", triggerHints);
  const seedMode = document.getElementById("id_seed_mode");
  const seed = document.getElementById("id_seed");
  // The seed box is never disabled (a disabled box takes no click, focus or typing): typing a
  // seed while Random is chosen switches the mode to Fixed; choosing Fixed moves focus to the box.
  seedMode.addEventListener("change", () => { if (seedMode.value === "fixed") seed.focus(); });
  seed.addEventListener("input", () => { if (seed.value !== "") seedMode.value = "fixed"; });
  form.addEventListener("submit", () => { document.getElementById("generate-button").disabled = true; });

  applyBase(baseSelect.value, false);
  triggerHints();

  // ---- live result -------------------------------------------------------------------------
  const result = document.getElementById("result");
  const id = result && result.dataset.generation;
  if (!id) return;
  const stateBadge = document.getElementById("gen-state");
  const progress = document.getElementById("gen-progress");
  const images = document.getElementById("gen-images");
  const queueLine = document.getElementById("gen-queue");
  const message = document.getElementById("gen-message");
  const shown = new Set();

  function duration(s) {
    if (s < 60) return `${Math.max(1, Math.round(s))} s`;
    if (s < 3600) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  function showImage(img) {
    if (shown.has(img.id)) return;
    shown.add(img.id);
    const fig = document.createElement("figure");
    fig.className = "gen-image";
    fig.dataset.seed = img.seed;
    fig.innerHTML = `<a href="${img.url}" target="_blank"><img src="${img.url}" alt="image ${img.index + 1}, seed ${img.seed}"></a>
      <figcaption>seed ${img.seed} · <a href="${img.download_url}" download>Download</a></figcaption>`;
    const template = document.getElementById("example-form");
    if (template) {
      const f = template.content.firstElementChild.cloneNode(true);
      f.querySelector("input[name=image]").value = img.id;
      fig.append(f);
    }
    images.append(fig);
  }

  // The wait estimate stays live while the generation waits: it counts down every second from
  // the last estimate, and a fresh one (the running training's step and ETA as the worker last
  // wrote them) is fetched every few seconds, besides the queue events on this page's topic.
  const QUEUE_REFRESH_MS = 5000;
  let queueInfo = null;
  let queueAt = 0;

  function renderQueue() {
    if (!queueInfo || result.dataset.state !== "queued") return;
    const q = queueInfo;
    const gone = (Date.now() - queueAt) / 1000;
    let text = q.ahead ? `Position ${q.position} in line (${q.ahead} ahead of you).` : "Next in line.";
    if (q.training) {
      const left = Math.max(0, q.training.eta_s - gone);
      text += ` The GPU is busy with a training (step ${q.training.step}/${q.training.total}, ` +
        (left > 0 ? `about ${duration(left)} left);` : "finishing);") + " generations run as soon as it finishes.";
    }
    if (!q.gpu_workers) text += " No GPU worker is running right now.";
    const wait = q.wait_s - gone;
    if (q.wait_s > 0) text += wait > 0 ? ` Expected to start in about ${duration(wait)}.` : " Expected to start any moment now.";
    queueLine.textContent = text;
    queueLine.hidden = false;
  }

  function showQueue(q) {
    queueInfo = q;
    queueAt = Date.now();
    renderQueue();
  }

  async function refreshQueue() {
    if (result.dataset.state !== "queued" || document.hidden) return;
    try {
      const response = await fetch(result.dataset.queueUrl, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const q = await response.json();
      if (q.state === "queued" && result.dataset.state === "queued") showQueue(q);
    } catch (err) {
      // A missed refresh is harmless: the countdown goes on and the next one retries.
    }
  }

  setInterval(renderQueue, 1000);
  setInterval(refreshQueue, QUEUE_REFRESH_MS);

  function setState(state) {
    result.dataset.state = state;
    stateBadge.textContent = state.charAt(0).toUpperCase() + state.slice(1);
    stateBadge.className = `badge ${state}`;
    if (state !== "queued") queueLine.hidden = true;
    if (["succeeded", "failed", "canceled"].includes(state)) {
      const cancel = document.getElementById("cancel-form");
      if (cancel) cancel.remove();
    }
  }

  const initial = document.getElementById("gen-initial-images");
  if (initial) JSON.parse(initial.textContent).forEach(showImage);
  const initialQueue = document.getElementById("gen-initial-queue");
  if (initialQueue) showQueue(JSON.parse(initialQueue.textContent));

  FluxLive.watch("generation", id, {
    state: (d) => {
      if (d.images_dropped) {  // requeued by a studio stop: those images are made again
        images.replaceChildren();
        shown.clear();
        progress.value = 0;
      }
      setState(d.state);
      const err = document.getElementById("gen-error");
      if (d.error) { err.textContent = d.error; err.hidden = false; }
      // a failure's message is its error, shown once (in red), not again above it
      if (d.message) message.textContent = d.message === d.error ? "" : d.message;
      if (d.state === "succeeded") progress.value = progress.max;
    },
    queue: (d) => { if (result.dataset.state === "queued") showQueue(d); },
    progress: (d) => {
      progress.max = d.total;
      progress.value = d.done;
      message.textContent = `Image ${d.image + 1}: step ${d.step} of ${d.steps}`;
    },
    image: showImage,
  });
})();

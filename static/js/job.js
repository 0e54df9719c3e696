// The live training page: state, progress, loss curve, samples and log, from FluxLive events.
(function () {
  const root = document.getElementById("live");
  if (!root) return;
  const jobId = root.dataset.job;
  const $ = (id) => document.getElementById(id);
  const FINAL = ["succeeded", "failed", "canceled"];
  const steps = [], raw = [], smooth = [];
  let ema = null, chart = null, startedAt = root.dataset.started ? new Date(root.dataset.started) : null;
  let finishedAt = root.dataset.finished ? new Date(root.dataset.finished) : null;
  // Start, finish and event times are the server's clock; this computer's may be off by seconds
  // (a clock one second ahead counted 9 s, then showed 8 s when the run ended). So elapsed time
  // is counted on the server's clock: its offset from ours is at least what the page's render
  // time and each event's stamp say (both were taken before we saw them), so take the largest.
  let serverAhead = root.dataset.now ? new Date(root.dataset.now) - Date.now() : 0;
  const baseTitle = document.title.split(" · ")[0];

  function fmtSeconds(s) {
    if (s == null || !isFinite(s)) return "–";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
  }

  function makeChart() {
    const el = $("loss-chart");
    chart = new uPlot({
      width: el.clientWidth || 600, height: 220,
      scales: { x: { time: false } },
      series: [{ label: "step" }, { label: "loss", stroke: "#c9c2fb", width: 1 }, { label: "smoothed", stroke: "#5b3df5", width: 2 }],
      axes: [{ label: "step" }, {}],
    }, [steps, raw, smooth], el);
    window.addEventListener("resize", () => chart.setSize({ width: el.clientWidth, height: 220 }));
  }

  function addLosses(pairs) {
    if (pairs.length && steps.length && pairs[0][0] <= steps[steps.length - 1]) {
      // A run that went back to an earlier checkpoint (or to step 0, with none) trains those
      // steps again: their new losses replace the old ones.
      const keep = steps.findIndex((step) => step >= pairs[0][0]);
      steps.length = raw.length = smooth.length = keep;
      ema = keep ? smooth[keep - 1] : null;
    }
    for (const [step, loss] of pairs) {
      if (steps.length && step <= steps[steps.length - 1]) continue;
      ema = ema == null ? loss : 0.9 * ema + 0.1 * loss;
      steps.push(step); raw.push(loss); smooth.push(ema);
    }
    if (chart) chart.setData([steps, raw, smooth]);
  }

  // Events replayed on (re)connect describe the past: a resumed job's history holds its old
  // "canceled" or "failed" state. Side effects that answer a change (reload, notification) run
  // only for events that arrive after the replay, so an old final state never reloads the page.
  let live = false;

  function setState(data, ev) {
    const at = ev && ev.ts ? new Date(ev.ts) : new Date();
    const badge = $("job-state");
    badge.textContent = data.state.charAt(0).toUpperCase() + data.state.slice(1);
    badge.className = "badge " + data.state;
    badge.dataset.state = data.state;
    root.dataset.state = data.state;
    $("queue-note").hidden = data.state !== "queued";
    if ((data.state === "starting" || data.state === "training") && !startedAt) startedAt = at;  // as the server's started_at
    if (data.state !== "training") { $("speed").textContent = "–"; $("eta").textContent = "–"; }  // no run, no speed
    showElapsed();  // at once, not a second later
    $("error").hidden = !data.error;
    if (data.error) $("error").textContent = data.error + (data.error_hint ? " — " + data.error_hint : "");
    if (data.message) appendLog(data.message);
    document.title = `${baseTitle} · ${badge.textContent}`;
    const final = FINAL.includes(data.state);
    const cancel = $("cancel-form"); if (cancel) cancel.hidden = final;
    const resume = $("resume-form"); if (resume) resume.hidden = !final;
    $("delete-form").hidden = !final;
    if (!final) { finishedAt = null; return; }
    finishedAt = at;
    if (data.state === "succeeded") $("finished").hidden = false;
    if (!live) return;
    notify(data.state === "succeeded" ? `Training finished: ${baseTitle}` : `Training ${data.state}: ${baseTitle}`);
    // The resume button (its step, or "Run again") is drawn by the server; fetch it once the job
    // has just stopped.
    if (data.state !== "succeeded") setTimeout(() => location.reload(), 800);
  }

  function notify(text) {
    if (!("Notification" in window) || !document.hidden) return;
    if (Notification.permission === "granted") new Notification(text);
  }

  function appendLog(line) {
    const log = $("log");
    log.textContent += line + "\n";
    log.scrollTop = log.scrollHeight;
  }

  function addSample(data) {
    const none = $("no-samples"); if (none) none.remove();
    if (document.querySelector(`[data-sample="${data.id}"]`)) return;
    const fig = document.createElement("figure");
    fig.className = "sample"; fig.dataset.sample = data.id;
    const img = document.createElement("img");
    img.className = "thumb"; img.src = data.url; img.alt = data.prompt;
    const cap = document.createElement("figcaption");
    cap.textContent = `step ${data.step}: ${data.prompt}`;
    fig.append(img, cap);
    $("samples").append(fig);
  }

  function queuePosition(data) {
    const running = data.running ? `; ${data.running} training${data.running > 1 ? "s" : ""} running` : "";
    $("queue-position").textContent = data.position ? ` — position ${data.position} in the queue${running}` : "";
  }

  function progress(data) {
    $("progress").max = data.total; $("progress").value = data.step;
    $("step").textContent = data.step; $("total").textContent = data.total;
    $("loss").textContent = data.loss.toFixed(4);
    $("lr").textContent = data.lr.toExponential(2);
    if (root.dataset.state === "training") {
      $("speed").textContent = data.it_per_s.toFixed(2);
      $("eta").textContent = fmtSeconds(data.eta_s);
    }
    addLosses(data.losses || [[data.step, data.loss]]);
  }

  function showElapsed() {
    if (!startedAt) return;
    const end = finishedAt || Date.now() + serverAhead;
    $("elapsed").textContent = fmtSeconds(Math.max(0, Math.floor((end - startedAt) / 1000)));  // whole seconds passed
  }
  setInterval(showElapsed, 1000);

  if (window.uPlot) makeChart();
  if ("Notification" in window && Notification.permission === "default" && !FINAL.includes(root.dataset.state)) {
    document.addEventListener("click", () => Notification.requestPermission(), { once: true });
  }
  FluxLive.watch("training", jobId, {
    state: setState,
    progress: progress,
    sample: addSample,
    queue: queuePosition,
    log: (d) => appendLog(d.line),
    checkpoint: (d) => appendLog(`checkpoint saved at step ${d.step}`),
    replayed: () => { live = true; },
    "*": (ev) => { if (ev.ts) serverAhead = Math.max(serverAhead, new Date(ev.ts) - Date.now()); },
  }, { onStatus: (s) => { $("conn").textContent = s === "live" ? "● live" : s; } });
})();

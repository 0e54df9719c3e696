// The live training page: state, progress, loss curve, samples and log, from FluxLive events.
(function () {
  const root = document.getElementById("live");
  if (!root) return;
  const jobId = root.dataset.job;
  const $ = (id) => document.getElementById(id);
  const FINAL = ["succeeded", "failed", "canceled"], RUNNING = ["starting", "training"];
  const steps = [], raw = [], smooth = [];
  let ema = null, chart = null;
  const serverStart = root.dataset.started ? new Date(root.dataset.started) : null;
  const serverFinish = root.dataset.finished ? new Date(root.dataset.finished) : null;
  // The row's run time (what the API calls predict_time): the runs that ended before the latest,
  // and when the latest began (none while a resumed job waits).
  const serverRunStart = root.dataset.runStarted ? new Date(root.dataset.runStarted) : null;
  const serverRan = Number(root.dataset.ran || 0) * 1000;
  // Start, finish and event times are the server's clock; this computer's may be off by seconds
  // (a clock one second ahead counted 9 s, then showed 8 s when the run ended). So elapsed time
  // is counted on the server's clock: its offset from ours is at least what the page's render
  // time and each event's stamp say (both were taken before we saw them), so take the largest.
  let serverAhead = root.dataset.now ? new Date(root.dataset.now) - Date.now() : 0;
  // The tab title is "<training name> · <state>", and a name may hold " · " itself ("pets · zxq").
  const baseTitle = document.title.slice(0, document.title.lastIndexOf(" · ")) || document.title;

  function fmtSeconds(s) {
    if (s == null || !isFinite(s)) return "–";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
  }

  const STEP_INCRS = [1, 2, 5].flatMap((d) => [1, 10, 100, 1000, 10000, 100000].map((p) => d * p)).sort((a, b) => a - b);

  function makeChart() {
    const el = $("loss-chart");
    // the card's inner width: clientWidth counts its padding, and a chart that wide overflows the
    // card (and a phone's screen)
    const width = () => { const css = getComputedStyle(el); return el.clientWidth - parseFloat(css.paddingLeft) - parseFloat(css.paddingRight); };
    chart = new uPlot({
      width: width() || 600, height: 220,
      scales: { x: { time: false } },
      series: [{ label: "step" }, { label: "loss", stroke: "#c9c2fb", width: 1 }, { label: "smoothed", stroke: "#5b3df5", width: 2 }],
      // Steps are whole numbers: ticks only at whole steps (uPlot's own increments go down to
      // tenths, and a short run's axis read 1.2, 1.4, ...).
      axes: [{ label: "step", incrs: STEP_INCRS }, {}],
    }, [steps, raw, smooth], el);
    window.addEventListener("resize", () => chart.setSize({ width: width(), height: 220 }));
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
  // "canceled" or "failed" state. While the page's first replay runs it keeps what the server drew
  // and only gathers the history (chart, samples, log, run times); the latest state and progress
  // show once the replay ends, so a reload does not flip through every old state and step. Side
  // effects that answer a change (reload, notification) run only for events after the replay.
  let live = false, pendingState = null, pendingProgress = null;

  // Elapsed is the time the job has run: each run goes from its start (starting or training) to its
  // end (a final state, or queued again: resumed, or its worker died), so the hours it sat canceled
  // or waited in the queue do not count. The server's row (its run time so far) stands in until
  // the replay has told the runs.
  let ranBefore = 0, runFrom = null, runs = 0;

  function countRun(state, at) {
    const running = RUNNING.includes(state);
    if (running && runFrom == null) {
      // The first run began when the server's row says (its state event comes a moment later).
      runFrom = !runs && serverStart && serverStart < at ? serverStart : at;
      runs += 1;
    } else if (!running && runFrom != null) {
      ranBefore += Math.max(0, at - runFrom);
      runFrom = null;
    }
  }

  function onState(data, ev) {
    countRun(data.state, ev && ev.ts ? new Date(ev.ts) : new Date(Date.now() + serverAhead));
    if (data.message) appendLog(data.message);
    // A state event tells the step too, newer than any progress before it (a resume goes back to
    // its checkpoint's step).
    if (!live) { pendingState = data; if (data.step != null) pendingProgress = null; return; }
    showState(data);
    if (!FINAL.includes(data.state)) return;
    notify(data.state === "succeeded" ? `Training finished: ${baseTitle}` : `Training ${data.state}: ${baseTitle}`);
    // The resume button (its step, or "Run again") is drawn by the server; fetch it once the job
    // has just stopped.
    if (data.state !== "succeeded") setTimeout(() => location.reload(), 800);
  }

  // "● live" while the training runs or waits; a finished job's page still listens (a resume from
  // elsewhere shows up here) but does not claim to be live. A lost connection always shows.
  let connStatus = "";
  function showConn() {
    // "forbidden": the server closed the socket for good (signed out, or the training deleted)
    const label = connStatus === "forbidden" ? "not live: reload the page (signed out, password changed or deleted)" : connStatus;
    $("conn").textContent = connStatus !== "live" ? label : FINAL.includes(root.dataset.state) ? "" : "● live";
  }

  function showState(data) {
    const badge = $("job-state");
    badge.textContent = data.state.charAt(0).toUpperCase() + data.state.slice(1);
    badge.className = "badge " + data.state;
    badge.dataset.state = data.state;
    root.dataset.state = data.state;
    showConn();
    if (data.step != null && data.total) {
      $("progress").max = data.total; $("progress").value = data.step;
      $("step").textContent = data.step; $("total").textContent = data.total;
    }
    $("queue-note").hidden = data.state !== "queued";
    if (data.state !== "training") { $("speed").textContent = "–"; $("eta").textContent = "–"; }  // no run, no speed
    showElapsed();  // at once, not a second later
    $("error").hidden = !data.error;
    if (data.error) $("error").textContent = data.error + (data.error_hint ? " — " + data.error_hint : "");
    document.title = `${baseTitle} · ${badge.textContent}`;
    const final = FINAL.includes(data.state);
    // Drawn for every job (hidden when it is not running): a job resumed elsewhere (another tab,
    // the API) can be canceled here too. A stop asked for earlier is over once the job has ended.
    $("cancel-form").hidden = final;
    if (final) { $("cancel").disabled = false; $("cancel").textContent = "Cancel"; $("cancel-note").hidden = true; }
    const resume = $("resume-form"); if (resume) resume.hidden = !final;
    $("delete-form").hidden = !final;
    if (data.state === "succeeded") $("finished").hidden = false;
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

  function onProgress(data) {
    addLosses(data.losses || [[data.step, data.loss]]);
    if (live) showProgress(data); else pendingProgress = data;
  }

  function showProgress(data) {
    $("progress").max = data.total; $("progress").value = data.step;
    $("step").textContent = data.step; $("total").textContent = data.total;
    $("loss").textContent = data.loss.toFixed(4);
    $("lr").textContent = data.lr.toExponential(2);
    if (root.dataset.state === "training") {
      $("speed").textContent = data.it_per_s.toFixed(2);
      $("eta").textContent = fmtSeconds(data.eta_s);
    }
  }

  function showElapsed() {
    let ran;
    if (live && runs) ran = ranBefore + (runFrom ? Date.now() + serverAhead - runFrom : 0);
    else if (serverStart) ran = serverRan + (serverRunStart ? (serverFinish || Date.now() + serverAhead) - serverRunStart : 0);
    else return;
    $("elapsed").textContent = fmtSeconds(Math.max(0, Math.floor(ran / 1000)));  // whole seconds passed
  }
  showElapsed();  // the server's figure, until the replay has told the runs
  setInterval(showElapsed, 1000);

  if (window.uPlot) makeChart();
  if ("Notification" in window && Notification.permission === "default" && !FINAL.includes(root.dataset.state)) {
    document.addEventListener("click", () => Notification.requestPermission(), { once: true });
  }
  FluxLive.watch("training", jobId, {
    state: onState,
    progress: onProgress,
    sample: addSample,
    queue: queuePosition,
    log: (d) => appendLog(d.line),
    checkpoint: (d) => appendLog(`checkpoint saved at step ${d.step}`),
    replayed: () => {
      if (live) return;  // a reconnect's replay: its events showed as they came
      live = true;
      if (pendingState) showState(pendingState);
      if (pendingProgress) showProgress(pendingProgress);
      showElapsed();
    },
    "*": (ev) => { if (ev.ts) serverAhead = Math.max(serverAhead, new Date(ev.ts) - Date.now()); },
  }, { onStatus: (s) => { connStatus = s; showConn(); } });
})();

// Live events for one object (a training, a dataset, a generation), replayed then streamed.
// Usage: FluxLive.watch("training", 12, {progress: (data, ev) => ..., "*": (ev) => ...});
// Reconnects with backoff and asks only for events after the last one seen, so nothing is
// missed or shown twice across reloads and network blips.
(function () {
  function watch(kind, id, handlers, options) {
    options = options || {};
    let lastId = options.after || 0;
    let delay = 500;
    let socket = null;
    let closed = false;
    const onStatus = options.onStatus || function () {};

    function dispatch(ev) {
      if (ev.id && ev.id <= lastId) return;
      if (ev.id) lastId = ev.id;
      const handler = handlers[ev.kind];
      if (handler) handler(ev.data, ev);
      if (handlers["*"]) handlers["*"](ev);
    }

    function connect() {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${location.host}/ws/events/${kind}/${id}/?after=${lastId}`);
      socket.onopen = () => { delay = 500; onStatus("live"); };
      socket.onmessage = (msg) => dispatch(JSON.parse(msg.data));
      socket.onclose = (e) => {
        if (closed) return;
        if (e.code === 4403) { onStatus("forbidden"); return; }
        onStatus("reconnecting");
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    connect();
    return { close() { closed = true; if (socket) socket.close(); }, get lastId() { return lastId; } };
  }
  window.FluxLive = { watch };
})();

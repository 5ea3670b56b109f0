// The live page: rows for delivery events from the server's SSE stream (no inline script).
(function () {
  "use strict";
  const state = document.getElementById("live-state");
  const body = document.querySelector("#live tbody");
  if (!state || !body) return;
  const MAX_ROWS = 500;
  const source = new EventSource(state.dataset.stream);
  source.addEventListener("open", function () { state.textContent = "connected"; });
  source.addEventListener("error", function () { state.textContent = "reconnecting…"; });
  source.addEventListener("delivery", function (event) {
    const d = JSON.parse(event.data);
    const row = document.createElement("tr");
    row.className = "status-" + d.status;
    row.dataset.notification = String(d.notification_id);
    row.dataset.device = String(d.device_id);
    [d.updated_at, d.notification_id, d.app_id || "", d.device_id, d.transport || "",
     d.status, d.reason || "", (d.title ? d.title + ": " : "") + d.message].forEach(function (v) {
      const cell = document.createElement("td");
      cell.textContent = String(v);
      row.appendChild(cell);
    });
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
  });
})();

// The try page: subscribe this browser as a channel device (the dashboard registers it), then
// let the SDK's channel client (/sdk/pushgate.js) show what arrives. No inline script.
(function () {
  "use strict";
  const root = document.getElementById("try");
  const state = document.getElementById("try-state");
  const device = document.getElementById("try-device");
  const rows = document.querySelector("#try-received tbody");
  const subscribe = document.getElementById("try-subscribe");
  const permission = document.getElementById("try-permission");
  if (!root || !window.Pushgate) return;
  let channel = null;

  function add(n) {
    const row = document.createElement("tr");
    row.dataset.notification = String(n.id);
    [new Date().toLocaleTimeString(), n.id, n.title || "", n.message, n.link || ""].forEach(function (v) {
      const cell = document.createElement("td");
      cell.textContent = String(v);
      row.appendChild(cell);
    });
    rows.insertBefore(row, rows.firstChild);
  }

  subscribe.addEventListener("click", function () {
    if (channel) channel.close();
    state.textContent = "subscribing…";
    fetch(root.dataset.register, {
      method: "POST",
      credentials: "same-origin",
      headers: {"X-CSRF-Token": root.dataset.csrf || ""}
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    }).then(function (registered) {
      device.textContent = "· device " + registered.device_id;
      device.dataset.device = String(registered.device_id);
      channel = window.Pushgate.channel({
        server: location.origin,
        deviceToken: registered.device_token,
        showNotifications: true,
        onNotification: add,
        onState: function (s) { state.textContent = s; }
      });
    }).catch(function (error) {
      state.textContent = "failed: " + error.message;
    });
  });

  permission.addEventListener("click", function () {
    if (!window.Notification) { permission.textContent = "This browser has no notifications"; return; }
    Notification.requestPermission().then(function (p) {
      permission.textContent = p === "granted" ? "Browser notifications on" : "Browser notifications: " + p;
    });
  });
})();

/*! Pushgate service worker (docs/browser.md). On the site's own origin:
 *
 *   // /pushgate-sw.js
 *   importScripts("https://push.example.com/sdk/pushgate-sw.js");
 *
 * Shows each Web Push notification and, when it is clicked, reports it opened
 * (POST /sdk/v1/opened with the device token that Pushgate.subscribeWebPush stored) and
 * opens its link.
 */
(function (worker) {
  "use strict";

  function stored() {
    return new Promise(function (resolve) {
      var open = worker.indexedDB.open("pushgate", 1);
      open.onupgradeneeded = function () { open.result.createObjectStore("state"); };
      open.onerror = function () { resolve(null); };
      open.onsuccess = function () {
        var request = open.result.transaction("state").objectStore("state").get("device");
        request.onsuccess = function () { resolve(request.result || null); };
        request.onerror = function () { resolve(null); };
      };
    });
  }

  function reportOpened(id) {
    if (!id) return Promise.resolve();
    return stored().then(function (device) {
      if (!device) return;
      return worker.fetch(device.server + "/sdk/v1/opened", {
        method: "POST",
        mode: "cors",
        credentials: "omit",
        headers: {"Content-Type": "text/plain;charset=UTF-8"},
        body: JSON.stringify({device_token: device.token, ids: [Number(id)]})
      }).catch(function () { /* offline: the click is not counted */ });
    });
  }

  worker.addEventListener("push", function (event) {
    var push = {};
    try { push = event.data ? event.data.json() : {}; } catch (e) { push = {body: event.data.text()}; }
    if (push.silent) return;
    var data = push.data || {};
    event.waitUntil(worker.registration.showNotification(push.title || "", {
      body: push.body || "",
      icon: push.icon,
      image: push.image,
      tag: push.tag,
      data: {id: data.pushgate_notification_id, url: push.url}
    }));
  });

  worker.addEventListener("notificationclick", function (event) {
    var data = event.notification.data || {};
    event.notification.close();
    var work = [reportOpened(data.id)];
    if (data.url) work.push(worker.clients.openWindow(data.url));
    event.waitUntil(Promise.all(work));
  });
})(self);

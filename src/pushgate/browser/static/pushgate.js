/*! Pushgate browser SDK (docs/browser.md). No dependencies, no cookies, no eval.
 *
 *   const pg = Pushgate.init({key: "pgk_...", server: "https://push.example.com"});
 *   await pg.subscribeWebPush({serviceWorker: "/pushgate-sw.js", identifiers, identity, attributes});
 *   const channel = await pg.connectChannel({onNotification: n => ..., showNotifications: true});
 */
(function (global) {
  "use strict";
  var script = global.document && global.document.currentScript;
  var DEFAULT_SERVER = script && script.src ? new URL(script.src).origin : global.location.origin;
  var STORE = "pushgate";

  function bytesOf(base64url) {
    var text = base64url.replace(/-/g, "+").replace(/_/g, "/");
    text += "===".slice((text.length + 3) % 4);
    var raw = global.atob(text);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  // The device token and server, for the service worker's "opened" reports (same origin).
  function remember(value) {
    return new Promise(function (resolve) {
      if (!global.indexedDB) return resolve();
      var open = global.indexedDB.open(STORE, 1);
      open.onupgradeneeded = function () { open.result.createObjectStore("state"); };
      open.onerror = function () { resolve(); };
      open.onsuccess = function () {
        var tx = open.result.transaction("state", "readwrite");
        tx.objectStore("state").put(value, "device");
        tx.oncomplete = function () { resolve(); };
        tx.onerror = function () { resolve(); };
      };
    });
  }

  function answer(response) {
    return response.json().catch(function () { return {}; }).then(function (body) {
      if (!response.ok) {
        var message = body && body.error ? body.error.message : "HTTP " + response.status;
        var error = new Error(message);
        error.status = response.status;
        throw error;
      }
      return body;
    });
  }

  function Client(options) {
    if (!options || !options.key) throw new Error("Pushgate.init: key (a browser key) is required");
    this.key = options.key;
    this.server = (options.server || DEFAULT_SERVER).replace(/\/+$/, "");
  }

  // A POST without a preflight: the key travels in the body, as text/plain.
  Client.prototype.post = function (path, body) {
    body.key = this.key;
    return global.fetch(this.server + path, {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      headers: {"Content-Type": "text/plain;charset=UTF-8"},
      body: JSON.stringify(body)
    }).then(answer);
  };

  Client.prototype.vapidKey = function () {
    var url = this.server + "/sdk/v1/vapid?key=" + encodeURIComponent(this.key);
    return global.fetch(url, {mode: "cors", credentials: "omit"}).then(answer).then(function (b) {
      return b.vapid_public_key;
    });
  };

  function describe(options, platform) {
    var body = {platform: platform};
    body.language = options.language || global.navigator.language || undefined;
    try {
      body.timezone = options.timezone || Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch (e) { /* no Intl: no timezone */ }
    ["identifiers", "identity", "attributes", "country", "name"].forEach(function (k) {
      if (options[k] !== undefined) body[k] = options[k];
    });
    return body;
  }

  // Register this browser as a device (POST /sdk/v1/devices): {id, subscriber_id, device_token}.
  Client.prototype.register = function (options, platform) {
    return this.post("/sdk/v1/devices", describe(options || {}, platform || "web"));
  };

  // Web Push: ask for permission, register the site's worker, subscribe with the app's VAPID
  // key and register the subscription as a web device.
  Client.prototype.subscribeWebPush = function (options) {
    var self = this;
    options = options || {};
    if (!("serviceWorker" in global.navigator) || !("PushManager" in global)) {
      return Promise.reject(new Error("This browser has no Web Push"));
    }
    return global.Notification.requestPermission().then(function (permission) {
      if (permission !== "granted") throw new Error("Notifications are not allowed");
      return global.navigator.serviceWorker.register(options.serviceWorker || "/pushgate-sw.js");
    }).then(function () {
      return global.navigator.serviceWorker.ready;
    }).then(function (registration) {
      var key = options.vapidKey ? Promise.resolve(options.vapidKey) : self.vapidKey();
      return key.then(function (vapid) {
        return registration.pushManager.subscribe({
          userVisibleOnly: true,
          applicationServerKey: bytesOf(vapid)
        });
      });
    }).then(function (subscription) {
      var body = describe(options, "web");
      body.subscription = subscription.toJSON();
      return self.post("/sdk/v1/devices", body);
    }).then(function (device) {
      return remember({server: self.server, token: device.device_token}).then(function () {
        return device;
      });
    });
  };

  // The device channel: a WebSocket that receives the device's notifications, acknowledges
  // them, shows them with the Notification API when allowed, and reports clicks as opened.
  function connect(server, token, options) {
    options = options || {};
    var url = server.replace(/^http/, "ws") + "/api/v1/channel/ws?token=" + encodeURIComponent(token);
    var socket = null;
    var closed = false;
    var delay = 1000;
    var state = options.onState || function () {};

    function send(type, id) {
      if (socket && socket.readyState === 1) socket.send(JSON.stringify({type: type, ids: [id]}));
    }

    function show(n) {
      if (!options.showNotifications || !global.Notification) return;
      if (global.Notification.permission !== "granted") return;
      var shown = new global.Notification(n.title || "", {body: n.message, tag: String(n.id)});
      shown.onclick = function () {
        send("opened", n.id);
        if (n.link && /^https?:/.test(n.link)) global.open(n.link, "_blank", "noopener");
      };
    }

    function receive(n) {
      send("ack", n.id);
      show(n);
      if (options.onNotification) options.onNotification(n);
    }

    function open() {
      socket = new global.WebSocket(url);
      socket.onopen = function () { delay = 1000; };
      socket.onmessage = function (event) {
        var message = JSON.parse(event.data);
        if (message.type === "ready") state("connected", message);
        else if (message.type === "notification") receive(message);
        else if (message.type === "batch") message.notifications.forEach(receive);
      };
      socket.onclose = function () {
        if (closed) return;
        state("reconnecting");
        global.setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      };
    }

    open();
    return {
      deviceToken: token,
      opened: function (id) { send("opened", id); },
      close: function () { closed = true; if (socket) socket.close(); state("closed"); }
    };
  }

  Client.prototype.connectChannel = function (options) {
    var self = this;
    options = options || {};
    var token = options.deviceToken
      ? Promise.resolve(options.deviceToken)
      : this.register(options, "channel").then(function (d) { return d.device_token; });
    return token.then(function (t) { return connect(self.server, t, options); });
  };

  global.Pushgate = {
    init: function (options) { return new Client(options); },
    // A channel device whose token the page already has (the dashboard's try page).
    channel: function (options) {
      return connect((options.server || DEFAULT_SERVER).replace(/\/+$/, ""), options.deviceToken, options);
    }
  };
})(self);

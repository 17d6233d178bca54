// Switchboard live updates. Pages are complete without this file; it adds Server-Sent
// Events (new messages and status changes appear without a reload) and sends forms in the
// background. Vendored, no dependencies.
(function () {
  "use strict";

  function scrollDown(el) { if (el) el.scrollTop = el.scrollHeight; }

  // State-changing requests carry the page's CSRF token (forms carry it as a field).
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrfHeaders = { "X-CSRF-Token": meta ? meta.content : "" };

  // A fresh idempotency key (the form's `key`): 32 hex characters from the browser's CSPRNG
  // (crypto.getRandomValues works on plain http too, where randomUUID does not).
  function newKey() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  // What a refused request's page says, as one line of text.
  function refusal(r) {
    return r.text().then(function (html) {
      var text = new DOMParser().parseFromString(html, "text/html").body.textContent || "";
      text = text.replace(/\s+/g, " ").trim();
      return "Not sent (" + r.status + "): " + (text.slice(0, 300) || "try again");
    });
  }

  // Submit a compose form with fetch; the SSE stream then shows the result. A sent reply
  // clears the box and gives the form a new key, so the next reply is a new message (one
  // key per reply: a repeat of the same request sends once). A refused one keeps the text
  // and says why.
  function backgroundSubmit(form, after) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      // Enter pressed again while the text is on its way (requestSubmit does not look at
      // the disabled button): the same text would go out twice.
      if (form.dataset.sending) return;
      var body = new URLSearchParams(new FormData(form));
      var button = form.querySelector("button");
      var text = form.querySelector("textarea");
      var key = form.querySelector('input[name="key"]');
      var error = form.querySelector(".form-error");
      var show = function (message) {
        if (!error) {
          error = document.createElement("p");
          error.className = "form-error";
          error.setAttribute("role", "alert");
          form.insertBefore(error, form.firstChild);
        }
        error.textContent = message;
      };
      if (button) button.disabled = true;
      form.dataset.sending = "1";
      fetch(form.action, { method: "POST", body: body, redirect: "manual" })
        .then(function (r) {
          if (r.type === "opaqueredirect" || r.ok) {
            if (text) text.value = "";
            if (key) key.value = newKey();
            if (error) error.remove();
            if (after) after();
            return;
          }
          return refusal(r).then(show);
        }, function () { show("Not sent: no answer from the server. Try again."); })
        .finally(function () {
          delete form.dataset.sending;
          if (button) button.disabled = false;
        });
    });
    var text = form.querySelector("textarea");
    if (text) text.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); form.requestSubmit(); }
    });
  }

  // `load(key)` (a promise) run for a burst of events about one key (a message id) one at
  // a time: an event that comes while it runs makes it run once more afterwards, so what is
  // shown last comes from a request made after the last event, whatever order the answers
  // arrive in. A key's runner is forgotten once idle.
  function seriallyBy(load) {
    var runners = {};
    return function (key) {
      var runner = runners[key];
      if (runner) { runner.again = true; return; }
      runner = runners[key] = { again: false };
      (function run() {
        Promise.resolve(key).then(load).catch(function () {}).then(function () {
          if (runner.again) { runner.again = false; run(); } else delete runners[key];
        });
      })();
    };
  }

  // `seriallyBy` for one thing (a whole thread).
  function serially(load) {
    var run = seriallyBy(load);
    return function () { run(""); };
  }

  // A GET that gives up after 20 s: a request that never ends would hold its runner.
  function get(url) {
    var stop = new AbortController();
    var timer = setTimeout(function () { stop.abort(); }, 20000);
    return fetch(url, { signal: stop.signal }).finally(function () { clearTimeout(timer); });
  }

  // sessionStorage, when the browser allows it (it throws when storage is blocked).
  function stored(key, value) {
    try {
      if (value === undefined) return sessionStorage.getItem(key);
      if (value === null) sessionStorage.removeItem(key); else sessionStorage.setItem(key, value);
    } catch (e) { return null; }
    return null;
  }

  // A reply being typed survives a reload: kept for this tab and page, put back once. Not
  // while it is being sent (it would come back after it went out).
  var draftKey = "switchboard:draft:" + location.pathname + location.search;
  var composeForm = function () { return document.querySelector("form.compose"); };
  (function restoreDraft() {
    var saved = stored(draftKey);
    stored(draftKey, null);
    var box = composeForm() && composeForm().querySelector("textarea");
    if (saved && box && !box.value) box.value = saved;
  })();
  function reload() {
    var form = composeForm();
    var box = form && form.querySelector("textarea");
    if (box && box.value && !form.dataset.sending) stored(draftKey, box.value);
    location.reload();
  }
  // Reloads now, or once a minute has passed since this tab's last automatic reload: a
  // stream that keeps breaking does not reload the page over and over.
  function reloadSoon() {
    var last = Number(stored("switchboard:auto-reload") || 0);
    setTimeout(function () {
      stored("switchboard:auto-reload", String(Date.now()));
      reload();
    }, Math.max(0, last + 60000 - Date.now()));
  }

  // A stream that broke (network, server restart, events lost between servers, a switch to
  // another business, sign-out) may have missed events: when it reconnects the page reloads,
  // so it shows what it missed, and the business the session now works in. A stream the
  // browser gave up on (its request refused) is asked for again: a server error or no
  // answer is retried every 30 s (the page stays as it is meanwhile); any other answer
  // (signed out, removed) reloads the page, which shows why.
  function listen(url, onEvent) {
    var es = new EventSource(url);
    var broken = false;
    ["message_created", "message_updated", "conversation_updated"].forEach(function (kind) {
      es.addEventListener(kind, function (ev) { onEvent(kind, JSON.parse(ev.data)); });
    });
    es.addEventListener("resync", reload);
    es.addEventListener("open", function () { if (broken) reloadSoon(); });
    es.addEventListener("error", function () {
      broken = true;
      if (es.readyState === EventSource.CLOSED) setTimeout(probe, 5000);
    });
    function probe() {
      var stop = new AbortController();
      fetch(url, { signal: stop.signal, headers: { Accept: "text/event-stream" } }).then(function (r) {
        stop.abort();
        if (r.status >= 500) setTimeout(probe, 30000); else reloadSoon();
      }, function () { setTimeout(probe, 30000); });
    }
    return es;
  }

  var inbox = document.querySelector('[data-live="inbox"]');
  if (inbox) {
    var thread = inbox.querySelector(".thread[data-conversation]");
    var cid = thread ? thread.dataset.conversation : null;
    var messages = document.getElementById("messages");
    var markRead = function () { if (cid) fetch("/conversations/" + cid + "/read", { method: "POST", headers: csrfHeaders }); };
    scrollDown(messages);
    markRead();
    var listTimer = null;
    var refreshList = function () {
      clearTimeout(listTimer);
      listTimer = setTimeout(function () {
        fetch("/conversations/list" + (cid ? "?c=" + cid : "")).then(function (r) {
          if (!r.ok) return;
          return r.text().then(function (html) {
            var list = document.getElementById("conversation-list");
            if (list) list.outerHTML = html;
          });
        });
      }, 150);
    };
    // A message's row, replaced, or put in its place by id (ids grow with time), so two
    // new messages whose answers cross still read in order.
    var upsert = seriallyBy(function (mid) {
      return get("/conversations/" + cid + "/messages/" + mid).then(function (r) {
        if (!r.ok) return;
        return r.text().then(function (html) {
          var existing = document.getElementById("m-" + mid);
          if (existing) { existing.outerHTML = html; return; }
          var later = Array.prototype.find.call(messages.children, function (el) {
            return el.id.indexOf("m-") === 0 && el.id > "m-" + mid;
          });
          if (later) later.insertAdjacentHTML("beforebegin", html);
          else { messages.insertAdjacentHTML("beforeend", html); scrollDown(messages); }
        });
      });
    });
    listen("/events", function (kind, e) {
      refreshList();
      if (cid && e.conversation_id === cid && e.message_id) {
        upsert(e.message_id);
        if (kind === "message_created") markRead();
      }
    });
    var compose = inbox.querySelector("form.compose");
    if (compose) backgroundSubmit(compose);
  }

  var dashboard = document.querySelector('[data-live="dashboard"]');
  if (dashboard) {
    var table = document.getElementById("activity");
    // A row replaced, or a new message's row put in its place by id (newest first, ids
    // grow with time); a change to a message no longer shown brings nothing back.
    var created = {};
    var activity = seriallyBy(function (mid) {
      var existing = function () { return document.getElementById("a-" + mid); };
      if (!existing() && !created[mid]) return;
      return get("/activity/" + mid).then(function (r) {
        if (!r.ok) return;
        return r.text().then(function (html) {
          if (existing()) { existing().outerHTML = html; return; }
          var older = Array.prototype.find.call(table.children, function (el) {
            return el.id.indexOf("a-") === 0 && el.id < "a-" + mid;
          });
          if (older) older.insertAdjacentHTML("beforebegin", html);
          else table.insertAdjacentHTML("beforeend", html);
          var row = existing();
          if (row) row.classList.add("slide-in");
          while (table.children.length > 20) table.removeChild(table.lastElementChild);
        });
      }).finally(function () { delete created[mid]; });
    });
    listen("/events", function (kind, e) {
      if (!e.message_id || kind === "conversation_updated") return;
      if (kind === "message_created") created[e.message_id] = true;
      activity(e.message_id);
    });
  }

  // Copy buttons: <button data-copy="text">.
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      navigator.clipboard.writeText(b.dataset.copy).then(function () {
        var label = b.textContent; b.textContent = "Copied"; setTimeout(function () { b.textContent = label; }, 1500);
      });
    });
  });

  var sim = document.querySelector('[data-live="simulator"]');
  if (sim && sim.dataset.number) {
    var query = "number=" + encodeURIComponent(sim.dataset.number) + "&phone=" + encodeURIComponent(sim.dataset.phone);
    var handset = function () { return document.getElementById("handset"); };
    // Not named `reload`: that is the page reload `listen` falls back on.
    var refreshHandset = serially(function () {
      return get("/simulator/thread?" + query).then(function (r) {
        if (!r.ok) return;
        return r.text().then(function (html) { handset().outerHTML = html; scrollDown(handset()); });
      });
    });
    scrollDown(handset());
    listen("/simulator/events?" + query, refreshHandset);
    var simCompose = sim.querySelector("form.compose");
    if (simCompose) backgroundSubmit(simCompose, refreshHandset);
  }
})();

// Switchboard live updates. Pages are complete without this file; it adds Server-Sent
// Events (new messages and status changes appear without a reload) and sends forms in the
// background. Vendored, no dependencies.
(function () {
  "use strict";

  function scrollDown(el) { if (el) el.scrollTop = el.scrollHeight; }

  // State-changing requests carry the page's CSRF token (forms carry it as a field).
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrfHeaders = { "X-CSRF-Token": meta ? meta.content : "" };

  // Submit a compose form with fetch; the SSE stream then shows the result.
  function backgroundSubmit(form, after) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var body = new URLSearchParams(new FormData(form));
      var button = form.querySelector("button");
      if (button) button.disabled = true;
      fetch(form.action, { method: "POST", body: body, redirect: "manual" })
        .then(function () {
          var text = form.querySelector("textarea");
          if (text) text.value = "";
          if (after) after();
        })
        .finally(function () { if (button) button.disabled = false; });
    });
    var text = form.querySelector("textarea");
    if (text) text.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); form.requestSubmit(); }
    });
  }

  // A stream that broke (network, server restart, events lost between servers, a switch to
  // another business, sign-out) may have missed events: when it reconnects the page reloads,
  // so it shows what it missed, and the business the session now works in. A stream that
  // cannot reconnect (signed out) reloads after a pause, and the page shows why.
  function listen(url, onEvent) {
    var es = new EventSource(url);
    var broken = false;
    ["message_created", "message_updated", "conversation_updated"].forEach(function (kind) {
      es.addEventListener(kind, function (ev) { onEvent(kind, JSON.parse(ev.data)); });
    });
    es.addEventListener("resync", function () { location.reload(); });
    es.addEventListener("open", function () { if (broken) location.reload(); });
    es.addEventListener("error", function () {
      broken = true;
      if (es.readyState === EventSource.CLOSED) setTimeout(function () { location.reload(); }, 5000);
    });
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
    var upsert = function (mid) {
      fetch("/conversations/" + cid + "/messages/" + mid).then(function (r) {
        if (!r.ok) return;
        return r.text().then(function (html) {
          var existing = document.getElementById("m-" + mid);
          if (existing) { existing.outerHTML = html; }
          else { messages.insertAdjacentHTML("beforeend", html); scrollDown(messages); }
        });
      });
    };
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
    // A new message slides in at the top; a status change replaces its row.
    listen("/events", function (kind, e) {
      if (!e.message_id || kind === "conversation_updated") return;
      fetch("/activity/" + e.message_id).then(function (r) {
        if (!r.ok) return;
        return r.text().then(function (html) {
          var existing = document.getElementById("a-" + e.message_id);
          if (existing) { existing.outerHTML = html; return; }
          table.insertAdjacentHTML("afterbegin", html);
          var row = table.firstElementChild;
          if (row) row.classList.add("slide-in");
          while (table.children.length > 20) table.removeChild(table.lastElementChild);
        });
      });
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
    var reload = function () {
      fetch("/simulator/thread?" + query).then(function (r) {
        if (!r.ok) return;
        return r.text().then(function (html) { handset().outerHTML = html; scrollDown(handset()); });
      });
    };
    scrollDown(handset());
    listen("/simulator/events?" + query, reload);
    var simCompose = sim.querySelector("form.compose");
    if (simCompose) backgroundSubmit(simCompose, reload);
  }
})();

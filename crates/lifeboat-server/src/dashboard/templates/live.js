// Live updates of the sessions list (docs/dashboard.md): a "Live" switch, on by default
// (off is remembered for this tab); while on, the tenant's event stream updates the rows
// on this page in place and counts changes to sessions not on it. Event data is only ever
// written as text.
"use strict";
(function () {
  var box = document.getElementById("live");
  if (!box) return;
  var label = document.createElement("label");
  var input = document.createElement("input");
  input.type = "checkbox";
  input.checked = sessionStorage.getItem("lifeboat-live") !== "off";
  label.appendChild(input);
  label.appendChild(document.createTextNode(" Live"));
  var notice = document.createElement("a");
  notice.href = location.href;
  notice.hidden = true;
  box.appendChild(label);
  box.appendChild(document.createTextNode(" "));
  box.appendChild(notice);
  var source = null;
  var others = {};
  var changes = 0;

  function row(id) {
    var rows = document.querySelectorAll("tr[data-session-id]");
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].getAttribute("data-session-id") === id) return rows[i];
    }
    return null;
  }

  function field(tr, name) {
    return tr.querySelector("[data-field='" + name + "']");
  }

  function update(type, data) {
    if (!data || typeof data.session_id !== "string") return;
    var tr = row(data.session_id);
    if (!tr) {
      if (type === "checkpoint.created" || others[data.session_id]) return;
      others[data.session_id] = true;
      changes++;
      notice.textContent = changes + (changes === 1 ? " new change" : " new changes") + " — reload";
      notice.hidden = false;
      return;
    }
    var status = field(tr, "status");
    if (type === "session.status" && status && typeof data.status === "string") {
      status.textContent = data.status;
      status.className = "status " + data.status;
      var crash = field(tr, "crash");
      if (crash) crash.textContent = data.crash_type || "";
      if (data.status !== "active") field(tr, "stalled").hidden = true;
    }
    if (type === "session.stalled") field(tr, "stalled").hidden = false;
    if (typeof data.attempt === "number") field(tr, "attempt").textContent = String(data.attempt);
  }

  function listen(type) {
    source.addEventListener(type, function (message) {
      try {
        update(type, JSON.parse(message.data).data);
      } catch (error) {
        // A frame that is not JSON changes nothing.
      }
    });
  }

  function toggle() {
    sessionStorage.setItem("lifeboat-live", input.checked ? "on" : "off");
    if (input.checked && !source) {
      source = new EventSource(box.getAttribute("data-events"));
      ["session.status", "session.stalled", "checkpoint.created"].forEach(listen);
    } else if (!input.checked && source) {
      source.close();
      source = null;
    }
  }

  input.addEventListener("change", toggle);
  toggle();
})();

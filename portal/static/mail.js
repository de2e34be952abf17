// The compose page's script (portal/drafts.py): saves the form as a draft every few
// seconds while its text changes, so a closed tab or a dead frontend loses little.
// The form works without it: its "Save draft" button posts the same fields.
(function () {
  "use strict";
  var form = document.querySelector("form.compose[data-autosave]");
  if (!form || !window.fetch || !window.FormData) {
    return;
  }
  var every = Math.max(5, parseInt(form.getAttribute("data-autosave"), 10) || 10) * 1000;
  var status = document.getElementById("draft-status");
  var draft = form.querySelector("input[name=draft]");
  var names = ["to", "cc", "subject", "body"];
  var saving = false;

  function text() {
    return names.map(function (name) {
      var field = form.elements.namedItem(name);
      return field ? field.value : "";
    }).join("\u0000");
  }

  var saved = text();

  function say(message) {
    if (status) {
      status.textContent = message;
    }
  }

  function save() {
    var now = text();
    if (saving || now === saved) {
      return;
    }
    saving = true;
    var fields = new FormData();
    ["csrf", "message_id", "draft", "in_reply_to", "forward_of"].concat(names).forEach(
      function (name) {
        var field = form.elements.namedItem(name);
        if (field) {
          fields.append(name, field.value);
        }
      });
    fetch("/mail/drafts/save", {
      method: "POST", body: fields, credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (answer) {
      return answer.json().then(function (body) {
        if (answer.ok && body.draft) {
          draft.value = body.draft;
          saved = now;
          var clock = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
          say("Draft saved at " + clock.format(new Date()) + ".");
        } else {
          say("The draft could not be saved" + (body.error ? ": " + body.error : "."));
        }
      });
    }).catch(function () {
      say("The draft could not be saved; it will be tried again.");
    }).then(function () {
      saving = false;
    });
  }

  window.setInterval(save, every);
  form.addEventListener("submit", function () {
    saved = text();  // sending (or the button's own save): no save under it
  });
}());

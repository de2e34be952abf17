// The drive page's script (docs/architecture.md, "Pages"); the page works without it.
// 1. Uploads: files chosen in the form or dropped on the page (into the folder shown) or
//    on a folder's row (into that folder) go up one request each, a few at a time, each
//    with its own progress bar and a Cancel button.  A name already taken comes back
//    held (409); the row then asks "Replace" or "Keep both" (/drive/held).  When every
//    file is done the folder is shown again with its notice.
// 2. Select all: the bar's checkbox ticks every row's; the bar says how many.
// Served from /static and allowed by its hash: the page's CSP allows no inline script.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  var section = document.getElementById("uploads");
  if (!form || !section || !window.XMLHttpRequest || !window.FormData) {
    return;
  }
  var UNITS = ["KB", "MB", "GB", "TB", "PB"];
  var AT_ONCE = 3; // uploads in flight at a time; the rest wait their turn
  var csrf = form.querySelector('input[name="csrf"]').value;
  var here = form.dataset.folder;
  var input = form.querySelector('input[type="file"]');
  var button = form.querySelector('button[type="submit"]');
  var list = section.querySelector("ul");
  var free = Number(form.dataset.free);
  var waiting = [];
  var running = 0;
  var open = 0; // files not finished: waiting, uploading, or asking about a clash
  var placed = 0;
  var failed = 0;

  // The same text as portal/sizes.py human_size: "12 bytes", "340 KB", "1.2 MB".
  function size(count) {
    count = Math.max(0, Math.floor(count));
    if (count < 1024) {
      return count === 1 ? "1 byte" : count + " bytes";
    }
    var value = count;
    var i = 0;
    for (i = 0; i < UNITS.length; i += 1) {
      value /= 1024;
      if (value < 1024 || i === UNITS.length - 1) {
        break;
      }
    }
    var tenths = value.toFixed(1);
    var text = Number(tenths) < 10 ? tenths : String(Math.floor(value + 0.5));
    if (text.slice(-2) === ".0") {
      text = text.slice(0, -2);
    }
    if (text === "1024" && i < UNITS.length - 1) {
      return "1 " + UNITS[i + 1];
    }
    return text + " " + UNITS[i];
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function reason(xhr) {
    try {
      var answer = JSON.parse(xhr.responseText);
      if (answer && answer.error) {
        return answer.error;
      }
    } catch (ignored) {
      // an HTML page: the refusal's own text
    }
    var page = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    var text = page.querySelector("p.error, .problem p");
    return text ? text.textContent : "The upload failed (HTTP " + xhr.status + ").";
  }

  function finish(task, state, text) {
    task.li.className = state;
    task.state.textContent = text;
    task.bar.hidden = true;
    task.actions.textContent = "";
    if (state === "failed") {
      failed += 1;
    }
    open -= 1;
    next();
    if (open === 0) {
      allDone();
    }
  }

  function allDone() {
    if (placed > 0 && failed === 0) {
      var query = placed === 1 ? "?done=uploaded" : "?done=uploaded-n&n=" + placed;
      window.location.assign(window.location.pathname + query);
    }
  }

  function post(url, fields, onload) {
    var xhr = new XMLHttpRequest();
    var data = new FormData();
    data.append("csrf", csrf);
    Object.keys(fields).forEach(function (k) {
      data.append(k, fields[k]);
    });
    xhr.open("POST", url);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.addEventListener("load", function () {
      onload(xhr);
    });
    return { xhr: xhr, data: data };
  }

  function answer(task, clash, choice) {
    var fields = { folder: task.folder, held: clash.held };
    fields["choice-" + clash.held] = choice;
    task.state.textContent = choice === "cancel" ? "Cancelling…" : "Saving…";
    var req = post("/drive/held", fields, function (xhr) {
      if (xhr.status === 200) {
        var names = JSON.parse(xhr.responseText).placed || [];
        placed += names.length;
        if (choice === "cancel") {
          finish(task, "cancelled", "Cancelled; nothing was stored.");
        } else {
          finish(task, "done", "Uploaded as “" + names[0] + "”.");
        }
        return;
      }
      ask(task, clash); // e.g. the file there changed since: the question again
      task.state.textContent = reason(xhr);
    });
    req.xhr.addEventListener("error", function () {
      ask(task, clash);
      task.state.textContent = "The connection was lost; choose again.";
    });
    req.xhr.send(req.data);
  }

  function ask(task, clash) {
    task.bar.hidden = true;
    task.li.className = "asking";
    task.state.textContent = "“" + clash.name + "” is already there.";
    task.actions.textContent = "";
    var choices = [["keep", "Keep both"], ["cancel", "Cancel"]];
    if (clash.replace) {
      choices.unshift(["replace", "Replace"]);
    }
    choices.forEach(function (c) {
      var b = el("button", c[0] === "cancel" ? "secondary" : "", c[1]);
      b.type = "button";
      b.setAttribute("aria-label", c[1] + ": " + task.file.name);
      b.addEventListener("click", function () {
        task.actions.textContent = "";
        answer(task, clash, c[0]);
      });
      task.actions.appendChild(b);
    });
    task.actions.firstChild.focus();
  }

  function start(task) {
    running += 1;
    var req = post("/drive/upload", {}, function (xhr) {
      running -= 1;
      var body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (ignored) {
        body = null;
      }
      if (xhr.status === 200 && body) {
        placed += body.uploaded.length;
        finish(task, "done", "Uploaded.");
      } else if (xhr.status === 409 && body && body.clashes && body.clashes.length) {
        next();
        ask(task, body.clashes[0]);
      } else {
        finish(task, "failed", reason(xhr));
      }
    });
    task.xhr = req.xhr;
    req.data.append("folder", task.folder);
    req.data.append("file", task.file, task.file.name);
    req.xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        task.bar.max = e.total;
        task.bar.value = e.loaded;
        task.state.textContent = size(Math.min(e.loaded, task.file.size)) + " of " +
          size(task.file.size);
      }
    });
    req.xhr.addEventListener("error", function () {
      running -= 1;
      finish(task, "failed", "The upload failed: the connection was lost.");
    });
    req.xhr.addEventListener("abort", function () {
      running -= 1;
      finish(task, "cancelled", "Cancelled; nothing was stored.");
    });
    task.state.textContent = "Starting…";
    req.xhr.send(req.data);
  }

  function next() {
    while (running < AT_ONCE && waiting.length) {
      start(waiting.shift());
    }
  }

  function cancel(task) {
    var at = waiting.indexOf(task);
    if (at >= 0) {
      waiting.splice(at, 1);
      finish(task, "cancelled", "Cancelled; nothing was stored.");
    } else if (task.xhr && task.xhr.readyState !== 4) {
      task.xhr.abort(); // the server drops a body cut short: nothing is stored
    }
  }

  function add(files, folder, where) {
    if (button.disabled || !files.length) {
      return;
    }
    section.hidden = false;
    var left = free;
    Array.prototype.forEach.call(files, function (file) {
      var li = el("li");
      var task = { file: file, folder: folder, li: li, xhr: null };
      li.appendChild(el("span", "file", file.name + (where ? " → " + where : "")));
      task.bar = el("progress");
      task.bar.max = Math.max(file.size, 1);
      task.bar.value = 0;
      task.bar.setAttribute("aria-label", "Uploading " + file.name);
      li.appendChild(task.bar);
      task.state = el("span", "state", "Waiting… (" + size(file.size) + ")");
      li.appendChild(task.state);
      task.actions = el("span", "acts");
      var stop = el("button", "secondary", "Cancel");
      stop.type = "button";
      stop.setAttribute("aria-label", "Cancel " + file.name);
      stop.addEventListener("click", function () {
        cancel(task);
      });
      task.actions.appendChild(stop);
      li.appendChild(task.actions);
      list.appendChild(li);
      open += 1;
      if (file.size > left) {
        finish(task, "failed", "That is " + size(file.size) + ", but only " + size(Math.max(left, 0)) +
          " of your quota is left.");
        return;
      }
      left -= file.size;
      waiting.push(task);
    });
    next();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    add(input.files, here, "");
    form.reset();
  });

  // Drag and drop: onto the page, or onto a folder's row.
  document.getElementById("drop-hint").hidden = false;
  var marked = null;

  function carriesFiles(event) {
    var types = event.dataTransfer && event.dataTransfer.types;
    return !!types && Array.prototype.indexOf.call(types, "Files") >= 0;
  }

  function mark(row) {
    if (marked && marked !== row) {
      marked.classList.remove("drop-here");
    }
    marked = row;
    if (row) {
      row.classList.add("drop-here");
    }
  }

  function folderRow(target) {
    return target && target.closest ? target.closest("tr[data-folder]") : null;
  }

  document.addEventListener("dragover", function (event) {
    if (!carriesFiles(event)) {
      return;
    }
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    document.body.classList.add("dragging");
    mark(folderRow(event.target));
  });
  document.addEventListener("dragleave", function (event) {
    if (!event.relatedTarget) { // left the window
      document.body.classList.remove("dragging");
      mark(null);
    }
  });
  document.addEventListener("drop", function (event) {
    if (!carriesFiles(event)) {
      return;
    }
    event.preventDefault();
    document.body.classList.remove("dragging");
    mark(null);
    var row = folderRow(event.target);
    var name = row ? row.querySelector("td.name a").textContent : "";
    add(event.dataTransfer.files, row ? row.dataset.folder : here, name);
  });

  // Select all, and how many are ticked.
  var all = document.getElementById("select-all");
  var count = document.getElementById("selected-count");
  if (all && count) {
    var picks = document.querySelectorAll('input.pick[name="item"]');
    var hint = count.textContent;
    var update = function () {
      var ticked = 0;
      Array.prototype.forEach.call(picks, function (p) {
        ticked += p.checked ? 1 : 0;
      });
      all.checked = ticked > 0 && ticked === picks.length;
      all.indeterminate = ticked > 0 && ticked < picks.length;
      count.textContent = ticked ? ticked + " selected" : hint;
    };
    all.parentNode.hidden = false; // its label: in the bar, as a phone shows no table header
    all.addEventListener("change", function () {
      Array.prototype.forEach.call(picks, function (p) {
        p.checked = all.checked;
      });
      update();
    });
    Array.prototype.forEach.call(picks, function (p) {
      p.addEventListener("change", update);
    });
  }
}());

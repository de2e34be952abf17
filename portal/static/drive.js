// The drive's upload form with a progress bar.  The form works without this
// script; with it, the upload goes through XMLHttpRequest so the page can show
// how far it is.  Served from /static: the page's CSP allows no inline script.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) {
    return;
  }
  var input = form.querySelector('input[type="file"]');
  var button = form.querySelector('button[type="submit"]');
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");

  function size(bytes) {
    var units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (bytes >= 1024 && i < units.length - 1) {
      bytes /= 1024;
      i += 1;
    }
    return (i === 0 ? bytes : bytes.toFixed(1)) + " " + units[i];
  }

  function done(message) {
    status.textContent = message;
    status.className = "error";
    button.disabled = false;
    bar.hidden = true;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var total = 0;
    for (var i = 0; i < input.files.length; i += 1) {
      total += input.files[i].size;
    }
    var free = Number(form.dataset.free);
    if (total > free) {
      done("That is " + size(total) + ", but only " + size(free) + " of your quota is left.");
      return;
    }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        bar.max = e.total;
        bar.value = e.loaded;
        status.textContent = Math.floor((100 * e.loaded) / e.total) + "% of " + size(e.total);
      }
    });
    xhr.addEventListener("load", function () {
      if (xhr.status === 200) {
        // The server answered 303 to the folder's listing: show it.
        status.textContent = "Uploaded.";
        window.location.assign(xhr.responseURL);
        return;
      }
      var page = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var reason = page.querySelector("p.error, .problem p");
      done(reason ? reason.textContent : "The upload failed (HTTP " + xhr.status + ").");
    });
    xhr.addEventListener("error", function () {
      done("The upload failed: the connection was lost.");
    });
    status.className = "hint";
    status.textContent = "Starting…";
    bar.hidden = false;
    bar.value = 0;
    button.disabled = true;
    xhr.send(new FormData(form));
  });
}());

// Every page's one small script (docs/architecture.md, "Pages"); each page works without it.
// 1. Times: the server writes <time datetime="...Z">2025-12-02 16:09 UTC</time>; here they
//    become the reader's time zone: "4:09 PM" today, "Dec 2" earlier this year,
//    "2025-12-02" before that, with the full local time as a tooltip.
// 2. Notices: a redirect's ?done=<key> put the message in the page's live region; the key
//    leaves the address bar (a reload or a bookmark must not repeat it), and the text is
//    written again a moment later: text already there at load is not announced by most
//    screen readers, a change is.
// 3. Failover: the service worker that sends a click or form this frontend cannot answer
//    through the balancer to a live one (docs/architecture.md, "Failover").
(function () {
  "use strict";
  var now = new Date();
  var clock = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  var dayOfYear = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
  var full = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function shown(when) {
    if (when.toDateString() === now.toDateString()) {
      return clock.format(when);
    }
    if (when.getFullYear() === now.getFullYear()) {
      return dayOfYear.format(when);
    }
    return when.getFullYear() + "-" + pad(when.getMonth() + 1) + "-" + pad(when.getDate());
  }

  var times = document.querySelectorAll("time[datetime]");
  for (var i = 0; i < times.length; i += 1) {
    var when = new Date(times[i].getAttribute("datetime"));
    if (!isNaN(when.getTime())) {
      times[i].textContent = shown(when);
      times[i].title = full.format(when);
    }
  }

  var url = new URL(window.location.href);
  if (url.searchParams.has("done") && window.history.replaceState) {
    url.searchParams.delete("done");
    url.searchParams.delete("n");
    url.searchParams.delete("undo");  // the webmail's undo: offered once, after the action
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  var notice = document.getElementById("notice");
  if (notice && notice.textContent.trim()) {
    // A new text node in the region, once the page has settled: a change to announce.
    var text = notice.textContent;
    window.setTimeout(function () {
      notice.textContent = text;
    }, 100);
  }

  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/failover-sw.js", { scope: "/" }).catch(function () {});
  }
}());

// The failover service worker (docs/architecture.md, "Failover"), registered by the page
// script for the whole site.  Served at /failover-sw.js, where the portal sets ENTRY to the
// balancer's address as browsers reach it ([web] public_url); a copy with ENTRY empty does
// nothing.
// A navigation (a click, a form, a typed address) that cannot reach this frontend at all, a
// network error, is answered with a 307 to the same path and query through the balancer,
// which sends the browser on to a live frontend: the session cookie is the cluster's, so
// the user stays signed in.  307 keeps a form's method and body, so a form is sent once
// more (every form write is conditioned or idempotent: docs/architecture.md says why).
// A frontend that answers, even with an error page, is left to answer.
"use strict";

var ENTRY = "";
var WINDOW_MS = 10000; // failovers are counted over this long...
var MAX_FAILOVERS = 4; // ...and past this many the worker stops sending the browser round
var RETRY_DELAY_MS = 1500; // the balancer checks each frontend every second
var recent = [];

var GIVE_UP_PAGE = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">" +
  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">" +
  "<title>Not reachable · raftcloud</title></head><body><main>" +
  "<h1>This server is not reachable</h1><p>Neither this server nor another one answered. " +
  "If you sent a form, it may not have been saved.</p>" +
  "<p><a href=\"ENTRY_HREF\">Try again</a></p></main></body></html>";

self.addEventListener("install", function (event) {
  event.waitUntil(self.skipWaiting());
});

self.addEventListener("activate", function (event) {
  event.waitUntil(self.clients.claim());
});

function after(ms) {
  return new Promise(function (resolve) {
    setTimeout(resolve, ms);
  });
}

function failover(request) {
  var now = Date.now();
  recent = recent.filter(function (t) {
    return now - t < WINDOW_MS;
  });
  var url = new URL(request.url);
  var target = ENTRY + url.pathname + url.search;
  if (recent.length >= MAX_FAILOVERS) {
    return new Response(GIVE_UP_PAGE.replace("ENTRY_HREF", ENTRY + "/"), {
      status: 503,
      headers: {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": "default-src 'none'",
        "Cache-Control": "no-store"
      }
    });
  }
  recent.push(now);
  // A second failure soon after the first: the balancer may not yet know this frontend
  // died and sent the browser straight back; give it time to notice.
  return after(recent.length > 1 ? RETRY_DELAY_MS : 0).then(function () {
    return Response.redirect(target, 307);
  });
}

self.addEventListener("fetch", function (event) {
  var request = event.request;
  if (!ENTRY || request.mode !== "navigate") {
    return; // the browser fetches it as if there were no worker
  }
  event.respondWith(fetch(request).catch(function () {
    return failover(request);
  }));
});

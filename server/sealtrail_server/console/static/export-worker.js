// The console's export downloads (ADR 0090). The page reads an export from
// the console's API as it reads any answer, with the tab's token in
// `Authorization`, checks it against its manifest as it goes, and hands its
// bytes to this worker as a stream; the worker answers a navigation to
// /static/export-download/ID (the page's hidden frame) with that stream as an
// attachment, which the browser saves to disk as it arrives. The file never
// sits whole in the tab's memory, no token is in a URL, and a file that does
// not match its manifest ends as a failed download, never a complete one.
//
// ID is the page's random name for one download; the worker forgets it once
// asked for. It grants nothing: it names a stream of this browser, not a call.

const PREFIX = "/static/export-download/";
const waiting = new Map();  // ID -> { stream, name, type }

self.addEventListener("install", () => self.skipWaiting());

self.addEventListener("message", (event) => {
  const { id, stream, name, type } = event.data || {};
  if (!id || !stream) return;  // the page's pings, which keep this worker running
  waiting.set(id, { stream, name, type });
  event.ports[0]?.postMessage("ready");
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin || !url.pathname.startsWith(PREFIX)) return;
  const id = url.pathname.slice(PREFIX.length);
  const download = waiting.get(id);
  waiting.delete(id);
  if (!download) {
    event.respondWith(new Response("No such export.", { status: 404 }));
    return;
  }
  const name = download.name.replace(/[^\w.-]/g, "_");
  event.respondWith(new Response(download.stream, {
    headers: {
      "Content-Type": download.type,
      "Content-Disposition": `attachment; filename="${name}"`,
      "X-Content-Type-Options": "nosniff",
      "Cache-Control": "no-store",
    },
  }));
});

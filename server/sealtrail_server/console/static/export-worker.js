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
const waiting = new Map();  // ID -> { stream, name, type, port }

self.addEventListener("install", () => self.skipWaiting());

// The page sends a port with each stream: "ready" once it is kept, "stopped"
// if the browser stops reading the download (cancelled in its downloads list):
// the page then ends the export, which would otherwise wait on a download
// that no longer reads (a stream handed over is not told of it).
self.addEventListener("message", (event) => {
  const { id, stream, name, type } = event.data || {};
  const [port] = event.ports;
  if (!id || !stream || !port) return;  // the page's pings, which keep this worker running
  waiting.set(id, { stream, name, type, port });
  port.postMessage("ready");
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
  const reader = download.stream.getReader();
  const body = new ReadableStream({
    async pull(controller) {
      const { value, done } = await reader.read();
      if (done) controller.close(); else controller.enqueue(value);
    },
    cancel(reason) {
      download.port.postMessage("stopped");
      return reader.cancel(reason);
    },
  });
  event.respondWith(new Response(body, {
    headers: {
      "Content-Type": download.type,
      "Content-Disposition": `attachment; filename="${name}"`,
      "X-Content-Type-Options": "nosniff",
      "Cache-Control": "no-store",
    },
  }));
});

// Base64 to bytes, for the console's pages (console.js, admin.js): an
// export's chunks (64 KiB each, every one hashed as well), hashes, keys and
// signatures. `Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))` calls back
// once per byte: some six times the SHA-256 of the same bytes, some 45 s
// of the tab's time over a 500 MB export. The browser's own decoder
// where it has one, else a loop into an array made once.
export function fromBase64(b64) {
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(b64);
  const binary = atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// Base64 to lowercase hex, as a hash is shown.
export const hexOf = (b64) => Array.from(fromBase64(b64), (b) => b.toString(16).padStart(2, "0")).join("");

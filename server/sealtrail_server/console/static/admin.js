// The console's admin views: API tokens, sinks, alert rules, retention and the
// legal hold (ADR 0069). Each change is one request to the console's API, which
// makes the RPC with this tab's token: the API checks the role, records the
// change (with the browser's address) and refuses what it refuses, in its own
// words. A sink, a rule or the hold is changed only as this page last read it
// (its etag): one changed meanwhile is refused, and the view is read again.

const $ = (selector, root = document) => root.querySelector(selector);

let api;  // console.js's request function
let signOut;

// What each view last read: a row's buttons act on these, etags included.
const read = { tokensNext: "", tokensShown: new Set(), sinks: [], rules: [], hold: null };

const LOADERS = {
  "admin-tokens": loadTokens, "admin-sinks": loadSinks, "admin-alerts": loadAlerts,
  "admin-retention": loadRetention,
};

export function setUpAdmin(context) {
  ({ api, signOut } = context);
  $("#token-create").addEventListener("submit", createToken);
  $("#sink-create").addEventListener("submit", createSink);
  $("#sink-create").elements.kind.addEventListener("change", (event) => {
    $("#sink-create").classList.toggle("kind-webhook", event.target.value === "webhook");
  });
  for (const box of document.querySelectorAll(".secret")) {
    $(".secret-copy", box).addEventListener("click", () => copySecret(box));
    $(".secret-done", box).addEventListener("click", () => hideSecret(box));
  }
  $("#tokens-more").addEventListener("click", () => loadTokens({ more: true }));
  $("#hold-place").addEventListener("submit", placeHold);
  $("#hold-release").addEventListener("click", releaseHold);
  $("#confirm-cancel").addEventListener("click", () => $("#confirm").close("cancel"));
  $("#confirm-typed").addEventListener("input", () => {
    $("#confirm-ok").disabled = $("#confirm-typed").value !== $("#confirm").dataset.typed;
  });
}

// Read afresh each time a view is shown: another admin (or the CLI) may have
// changed anything since.
export function showAdminView(id) {
  const section = document.getElementById(id);
  clearMessages(section);
  return LOADERS[id]();
}

// Everything the admin views hold, the secrets shown once first.
export function clearAdmin() {
  for (const box of document.querySelectorAll(".secret")) hideSecret(box);
  for (const section of document.querySelectorAll("section.view[id^='admin-']")) {
    for (const body of section.querySelectorAll("tbody")) body.replaceChildren();
    clearMessages(section);
  }
  $("#retention-policy").replaceChildren();
  $("#legal-hold-state").replaceChildren();
  Object.assign(read, { tokensNext: "", sinks: [], rules: [], hold: null });
  read.tokensShown.clear();
  if ($("#confirm").open) $("#confirm").close("cancel");
}

// --- shared -------------------------------------------------------------------

function clearMessages(section) {
  for (const message of section.querySelectorAll(".done, .error")) message.textContent = "";
}

function say(section, text) {
  $(".error", section).textContent = "";
  $(".done", section).textContent = text;
}

// An error of a change or a read, as the API worded it; a 401 (the token was
// revoked, by this page perhaps) signs out.
function failed(section, error, what) {
  if (error.status === 401) { signOut(); return; }
  $(".done", section).textContent = "";
  $(".error", section).textContent = error.reason === "ETAG_MISMATCH"
    ? `${what} changed since this page read it: nothing was changed. It is shown again as it`
      + " is now: check it and try again."
    : error.message;
}

// Runs `load` with the section marked busy (for assistive technology, and for
// whoever waits for the view to be read).
async function busy(section, load) {
  section.setAttribute("aria-busy", "true");
  try { await load(); } finally { section.removeAttribute("aria-busy"); }
}

async function change(path, method, body) {
  return (await api(path, null, { method, body })).json();
}

const text = (value) => (value === undefined || value === null ? "" : String(value));
const ENUM = /^(ROLE|CATEGORY|OUTCOME|SEVERITY)_/;
const label = (value) => (ENUM.test(value || "")
  ? value.replace(ENUM, "").toLowerCase().replace(/_/g, " ") : text(value));

function cell(row, value, className) {
  const td = row.insertCell();
  td.textContent = text(value);
  if (className) td.className = className;
  return td;
}

// A time in the viewer's zone, UTC on hover; `none` when there is none.
function timeCell(row, time, none) {
  const td = cell(row, time ? new Date(time).toLocaleString() : none);
  if (time) td.title = `${time} (UTC)`;
  return td;
}

function lines(td, parts) {
  td.replaceChildren(...parts.map(([words, className]) => {
    const line = document.createElement("div");
    line.textContent = words;
    if (className) line.className = className;
    return line;
  }));
  return td;
}

function button(words, onClick, className) {
  const made = document.createElement("button");
  made.type = "button";
  made.textContent = words;
  if (className) made.className = className;
  made.addEventListener("click", onClick);
  return made;
}

// Asks before a change that cannot be taken back; with `typed`, the OK stays
// disabled until that name is typed (a sink's deletion). Resolves true on OK.
function confirmed({ title, body, action, typed = "" }) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = body;
  $("#confirm-ok").textContent = action;
  $("#confirm-typed-label").hidden = !typed;
  $("#confirm-name").textContent = typed;
  $("#confirm-typed").value = "";
  dialog.dataset.typed = typed;
  $("#confirm-ok").disabled = Boolean(typed);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    // Not the OK button: Enter alone must not confirm what was not read.
    (typed ? $("#confirm-typed") : $("#confirm-cancel")).focus();
  });
}

// An EventFilter in words: "actions doc.*; categories data access".
function filterWords(filter = {}) {
  const parts = [];
  for (const [key, value] of Object.entries(filter)) {
    if (Array.isArray(value) ? !value.length : !value || value === "SEVERITY_UNSPECIFIED") continue;
    const name = key === "min_severity" ? "severity at least" : key.replace(/_/g, " ");
    const shown = Array.isArray(value) ? value.map(label).join(", ")
      : key.startsWith("occurred_") ? new Date(value).toLocaleString() : label(value);
    parts.push(`${name} ${shown}`);
  }
  return parts.length ? parts.join("; ") : "every event";
}

// "1 event", "2,001 events".
const count = (n, word) => `${Number(n).toLocaleString()} ${word}${Number(n) === 1 ? "" : "s"}`;

function duration(seconds) {
  const n = Number(seconds);
  for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "min"]]) {
    if (n >= size && n % size === 0) return `${n / size} ${unit}`;
  }
  return `${n} s`;
}

// --- tokens ---------------------------------------------------------------------

async function loadTokens({ more = false } = {}) {
  const section = $("#admin-tokens");
  await busy(section, async () => {
    try {
      const params = more && read.tokensNext ? new URLSearchParams({ page_token: read.tokensNext }) : null;
      const page = await (await api("/api/tokens", params)).json();
      const rows = page.tokens.filter((token) => !more || !read.tokensShown.has(token.token_id))
        .map(tokenRow);
      if (!more) read.tokensShown.clear();
      for (const token of page.tokens) read.tokensShown.add(token.token_id);
      const body = $("#tokens-table tbody");
      if (more) body.append(...rows); else body.replaceChildren(...rows);
      read.tokensNext = page.next_page_token;
      $("#tokens-more").hidden = !read.tokensNext;
    } catch (error) {
      failed(section, error, "The tokens");
    }
  });
}

function tokenRow(token) {
  const row = document.createElement("tr");
  row.dataset.id = token.token_id;
  cell(row, token.name || "(no name)");
  cell(row, label(token.role));
  cell(row, token.token_id, "id");
  timeCell(row, token.create_time, "");
  timeCell(row, token.expire_time, "never");
  timeCell(row, token.last_use_time, "not since created");
  const expired = token.expire_time && new Date(token.expire_time) <= new Date();
  if (token.revoke_time) {
    timeCell(row, token.revoke_time).textContent = `revoked ${new Date(token.revoke_time).toLocaleString()}`;
  } else {
    cell(row, expired ? "expired" : "live", expired ? "bad" : "");
  }
  const actions = row.insertCell();
  actions.className = "actions";
  if (!token.revoke_time) actions.append(button("Revoke", () => revokeToken(token), "danger"));
  return row;
}

async function createToken(event) {
  event.preventDefault();
  const section = $("#admin-tokens");
  const form = event.target;
  const submit = form.querySelector("button[type=submit]");
  const body = { role: form.elements.role.value, name: form.elements.name.value.trim() };
  const expires = form.elements.expires.value;
  if (expires) body.expire_time = new Date(expires).toISOString();
  clearMessages(section);
  submit.disabled = true;
  try {
    const created = await change("/api/tokens", "POST", body);
    $("#token-secret-role").textContent = `an ${label(created.token.role)}`.replace(/^an ([^aeiou])/, "a $1");
    showSecret($("#token-secret"), created.secret, created.token.name);
    form.reset();
    say(section, `Token ${created.token.name} created (recorded as api_token.created).`);
    await loadTokens();
    if (!read.tokensShown.has(created.token.token_id)) {  // past the first page
      $("#tokens-table tbody").append(tokenRow(created.token));
      read.tokensShown.add(created.token.token_id);
    }
  } catch (error) {
    failed(section, error, "The token");
  } finally {
    submit.disabled = false;
  }
}

// A secret shown once (a new token's, a new webhook's signing secret): here
// in this tab's page only, until "I have stored it" or signing out; the API
// never gives it again.
function showSecret(box, secret, name) {
  $(".secret-value", box).value = secret;
  $(".secret-name", box).textContent = `“${name}”`;
  $(".secret-status", box).textContent = "";
  box.hidden = false;
  $(".secret-value", box).focus();
  $(".secret-value", box).select();
}

function hideSecret(box) {
  $(".secret-value", box).value = "";
  $(".secret-status", box).textContent = "";
  box.hidden = true;
}

async function copySecret(box) {
  const field = $(".secret-value", box);
  const status = $(".secret-status", box);
  try {
    await navigator.clipboard.writeText(field.value);  // no clipboard API off a secure context
    status.textContent = "Copied to the clipboard.";
  } catch {
    field.focus();
    field.select();
    status.textContent = "This browser did not let the page copy it: it is selected, copy it yourself.";
  }
}

async function revokeToken(token) {
  const section = $("#admin-tokens");
  const name = token.name || token.token_id;
  const ok = await confirmed({
    title: `Revoke the token “${name}”?`,
    body: `Every call made with this ${label(token.role)} token is refused from now on (within`
      + " 10 seconds on other server processes). A revoked token cannot be restored: whoever"
      + " uses it needs a new one. If it is the token this tab signed in with, you are signed out.",
    action: "Revoke",
  });
  if (!ok) return;
  clearMessages(section);
  try {
    await change(`/api/tokens/${encodeURIComponent(token.token_id)}/revoke`, "POST", {});
    say(section, `Token ${name} revoked (recorded as api_token.revoked).`);
    await loadTokens();
  } catch (error) {
    failed(section, error, "The token");
  }
}

// --- sinks ----------------------------------------------------------------------

const SINK_KINDS = { webhook: "webhook", splunk_hec: "Splunk HEC", datadog_logs: "Datadog Logs",
  elasticsearch: "Elasticsearch", chat: "chat" };

async function readSinks() {
  read.sinks = (await (await api("/api/sinks")).json()).sinks;
  return read.sinks;
}

async function loadSinks() {
  const section = $("#admin-sinks");
  await busy(section, async () => {
    try {
      const sinks = await readSinks();
      $("#sinks-table tbody").replaceChildren(...sinks.map(sinkRow));
      $(".empty", section).hidden = sinks.length > 0;
    } catch (error) {
      failed(section, error, "The sinks");
    }
  });
}

function sinkRow(sink) {
  const row = document.createElement("tr");
  row.dataset.id = sink.id;
  const kind = Object.keys(SINK_KINDS).find((name) => sink[name]);
  const destination = sink[kind] || {};
  cell(row, sink.name);
  cell(row, SINK_KINDS[kind] || "unknown");
  cell(row, destination.url || destination.url_hint
    || (kind === "datadog_logs" ? "https://http-intake.logs.datadoghq.com (default)" : ""), "id");
  const format = sink.format === "PAYLOAD_FORMAT_OCSF" ? " (OCSF)" : "";
  cell(row, filterWords(sink.filter) + format);
  lines(row.insertCell(), delivery(sink));
  cell(row, sink.paused ? "paused" : "active", sink.paused ? "bad" : "");
  const actions = row.insertCell();
  actions.className = "actions";
  actions.append(
    button(sink.paused ? "Resume" : "Pause", () => pauseSink(sink)),
    button("Delete", () => deleteSink(sink), "danger"),
  );
  return row;
}

// A sink's delivery state in a few lines: lag, last error, dead letters.
function delivery(sink) {
  const state = sink.state || {};
  const lag = Number(state.lag_events || 0);
  const parts = [[lag ? `${count(lag, "event")} behind` : "up to date"]];
  if (state.last_delivery_time) {
    parts.push([`last delivered ${new Date(state.last_delivery_time).toLocaleString()}`]);
  } else {
    parts.push(["nothing delivered yet"]);
  }
  if (state.last_error) {
    const when = state.last_error_time ? ` (${new Date(state.last_error_time).toLocaleString()})` : "";
    parts.push([`last error${when}: ${state.last_error}`, "bad"]);
    const failures = Number(state.consecutive_failures || 0);
    const next = state.next_attempt_time
      ? `, next attempt ${new Date(state.next_attempt_time).toLocaleString()}` : "";
    if (failures) parts.push([`${count(failures, "failure")} in a row${next}`, "bad"]);
  }
  const dead = Number(state.dead_letters || 0);
  if (dead) parts.push([`${count(dead, "dead letter")} (sealtrail sinks dead-letters)`, "bad"]);
  const replays = Number(state.pending_replays || 0);
  if (replays) parts.push([`${count(replays, "replay")} pending`]);
  return parts;
}

// A webhook's signing secret, made here as `sealtrail sinks create
// --generate-secret` makes one: 32 random bytes, base64, after `whsec_`.
function webhookSecret() {
  return `whsec_${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`;
}

// The EventFilter of the form's fields, as the API's JSON names it.
function formFilter(fields) {
  const filter = {};
  const actions = fields.actions.value.split(",").map((action) => action.trim()).filter(Boolean);
  if (actions.length) filter.actions = actions;
  if (fields.categories.value) filter.categories = [`CATEGORY_${fields.categories.value.toUpperCase()}`];
  if (fields.min_severity.value) filter.min_severity = `SEVERITY_${fields.min_severity.value.toUpperCase()}`;
  return filter;
}

async function createSink(event) {
  event.preventDefault();
  const section = $("#admin-sinks");
  const form = event.target;
  const fields = form.elements;
  const submit = form.querySelector("button[type=submit]");
  const kind = fields.kind.value;
  const name = fields.name.value.trim();
  const secret = kind === "webhook" ? webhookSecret() : "";
  const sink = { name, filter: formFilter(fields) };
  sink[kind] = secret ? { url: fields.url.value, secrets: [secret] } : { url: fields.url.value };
  if (kind === "webhook" && fields.format.value === "ocsf") sink.format = "PAYLOAD_FORMAT_OCSF";
  clearMessages(section);
  submit.disabled = true;
  try {
    await change("/api/sinks", "POST", { sink, from_beginning: fields.from_beginning.checked });
    if (secret) showSecret($("#sink-secret"), secret, name);
    form.reset();
    form.classList.add("kind-webhook");
    say(section, `Sink ${name} added (recorded as sink.created).`);
    await loadSinks();
  } catch (error) {
    failed(section, error, `The sink ${name}`);
  } finally {
    submit.disabled = false;
  }
}

async function pauseSink(sink) {
  const section = $("#admin-sinks");
  clearMessages(section);
  const paused = !sink.paused;
  try {
    await change(`/api/sinks/${encodeURIComponent(sink.id)}`, "PATCH", { paused, etag: sink.etag });
    say(section, `Sink ${sink.name} ${paused ? "paused" : "resumed"} (recorded as sink.updated).`);
  } catch (error) {
    failed(section, error, `The sink ${sink.name}`);
    if (error.status === 401) return;
  }
  await loadSinks();
}

async function deleteSink(sink) {
  const section = $("#admin-sinks");
  const ok = await confirmed({
    title: `Delete the sink “${sink.name}”?`,
    body: "Forwarding to it stops, and its cursor, dead letters and pending replays are deleted"
      + " with it: events it has not delivered yet never will be. The log keeps every event.",
    action: "Delete the sink",
    typed: sink.name,
  });
  if (!ok) return;
  clearMessages(section);
  try {
    await change(`/api/sinks/${encodeURIComponent(sink.id)}`, "DELETE", { etag: sink.etag });
    say(section, `Sink ${sink.name} deleted (recorded as sink.deleted).`);
  } catch (error) {
    failed(section, error, `The sink ${sink.name}`);
    if (error.status === 401) return;
  }
  await loadSinks();
}

// --- alert rules ------------------------------------------------------------------

const GROUPS = { ALERT_GROUP_BY_ACTOR: " per actor", ALERT_GROUP_BY_IP: " per IP" };
const WEEKDAYS = ["", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

async function loadAlerts() {
  const section = $("#admin-alerts");
  await busy(section, async () => {
    try {
      // The sinks too: a rule names its sinks by id.
      const [rules] = await Promise.all([
        api("/api/alert-rules").then((answer) => answer.json()).then((answer) => answer.rules),
        readSinks(),
      ]);
      read.rules = rules;
      $("#alerts-table tbody").replaceChildren(...rules.map(ruleRow));
      $(".empty", section).hidden = rules.length > 0;
    } catch (error) {
      failed(section, error, "The alert rules");
    }
  });
}

function condition(rule) {
  if (rule.match) return `every event of ${filterWords(rule.match.filter)}`;
  if (rule.threshold) {
    const { count, window_seconds: window, group_by: group, filter } = rule.threshold;
    return `${count} within ${duration(window)}${GROUPS[group] || ""}: ${filterWords(filter)}`;
  }
  if (rule.new_ip) return `an actor from a new IP address: ${filterWords(rule.new_ip.filter)}`;
  if (rule.new_country) return `an actor from a new country: ${filterWords(rule.new_country.filter)}`;
  if (rule.off_hours) {
    const hours = rule.off_hours;
    const days = hours.working_days?.length ? hours.working_days.map((d) => WEEKDAYS[d]).join(" ") : "Mon–Fri";
    return `outside ${hours.start_hour}:00–${hours.end_hour}:00 ${days} (${hours.time_zone || "UTC"}):`
      + ` ${filterWords(hours.filter)}`;
  }
  return "unknown condition (a newer server's?)";
}

function ruleRow(rule) {
  const row = document.createElement("tr");
  row.dataset.id = rule.id;
  const names = new Map(read.sinks.map((sink) => [sink.id, sink.name]));
  cell(row, rule.name);
  cell(row, condition(rule));
  const severity = rule.severity === "SEVERITY_UNSPECIFIED" ? "warning" : label(rule.severity);
  cell(row, severity, `severity-${severity}`);
  cell(row, (rule.sink_ids || []).map((id) => names.get(id) || `${id} (deleted)`).join(", ") || "none");
  const fired = Number(rule.fired || 0);
  const last = rule.last_fired_time ? `, last ${new Date(rule.last_fired_time).toLocaleString()}` : "";
  cell(row, fired ? `${count(fired, "time")}${last}` : "never");
  cell(row, rule.disabled ? "disabled" : "enabled", rule.disabled ? "bad" : "");
  const actions = row.insertCell();
  actions.className = "actions";
  actions.append(
    button(rule.disabled ? "Enable" : "Disable", () => disableRule(rule)),
    button("Delete", () => deleteRule(rule), "danger"),
  );
  return row;
}

async function disableRule(rule) {
  const section = $("#admin-alerts");
  clearMessages(section);
  const disabled = !rule.disabled;
  try {
    await change(`/api/alert-rules/${encodeURIComponent(rule.id)}`, "PATCH", { disabled, etag: rule.etag });
    say(section, `Rule ${rule.name} ${disabled ? "disabled" : "enabled"} (recorded as alert_rule.updated).`);
  } catch (error) {
    failed(section, error, `The rule ${rule.name}`);
    if (error.status === 401) return;
  }
  await loadAlerts();
}

async function deleteRule(rule) {
  const section = $("#admin-alerts");
  const ok = await confirmed({
    title: `Delete the alert rule “${rule.name}”?`,
    body: "It stops watching at once and its count of alerts is lost; the alerts it fired stay"
      + " in the log. Disabling it instead keeps it for later.",
    action: "Delete the rule",
  });
  if (!ok) return;
  clearMessages(section);
  try {
    await change(`/api/alert-rules/${encodeURIComponent(rule.id)}`, "DELETE", { etag: rule.etag });
    say(section, `Rule ${rule.name} deleted (recorded as alert_rule.deleted).`);
  } catch (error) {
    failed(section, error, `The rule ${rule.name}`);
    if (error.status === 401) return;
  }
  await loadAlerts();
}

// --- retention and legal hold -------------------------------------------------------

const keptFor = (days) => (Number(days) ? count(days, "day") : "forever");

async function loadRetention() {
  const section = $("#admin-retention");
  await busy(section, async () => {
    try {
      const { policy, legal_hold: hold } = await (await api("/api/retention")).json();
      showPolicy(policy);
      showHold(hold);
    } catch (error) {
      failed(section, error, "The retention policy");
    }
  });
}

function definitions(list, entries) {
  list.replaceChildren(...entries.flatMap(([name, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    return [dt, dd];
  }));
  return list;
}

function showPolicy(policy) {
  const entries = [["Kept by default", keptFor(policy.default_days)]];
  for (const rule of policy.rules || []) {
    const what = rule.category ? `category ${label(rule.category)}` : `actions ${rule.action_prefix}`;
    entries.push(["Except", `${what}: ${keptFor(rule.days)}`]);
  }
  entries.push(["Last changed", policy.update_time ? new Date(policy.update_time).toLocaleString() : "never"]);
  const list = document.createElement("dl");
  list.className = "fields";
  $("#retention-policy").replaceChildren(definitions(list, entries));
}

function showHold(hold) {
  read.hold = hold;
  const when = hold.update_time ? new Date(hold.update_time).toLocaleString() : "never";
  definitions($("#legal-hold-state"), [
    ["Status", hold.on ? "On: nothing of this tenant is purged or erased" : "Off"],
    ...(hold.on ? [["Reason", hold.reason]] : []),
    [hold.on ? "Placed" : "Last changed", when],
  ]);
  $("#hold-place").hidden = hold.on;
  $("#hold-release").hidden = !hold.on;
}

async function setHold(body, done) {
  const section = $("#admin-retention");
  clearMessages(section);
  try {
    const answer = await change("/api/legal-hold", "PUT", { ...body, etag: read.hold.etag });
    showHold(answer.legal_hold);
    say(section, done);
    return true;
  } catch (error) {
    failed(section, error, "The legal hold");
    if (error.reason === "ETAG_MISMATCH") await loadRetention();
    return false;
  }
}

async function placeHold(event) {
  event.preventDefault();
  const reason = event.target.elements.reason.value.trim();
  const ok = await confirmed({
    title: "Place a legal hold?",
    body: `While it is on, nothing of this tenant's log is purged, whatever the retention policy,`
      + ` and the tenant cannot be erased. Reason: ${reason}`,
    action: "Place the hold",
  });
  if (ok && await setHold({ on: true, reason }, "Legal hold placed (recorded as retention.legal_hold_placed).")) {
    event.target.reset();
  }
}

async function releaseHold() {
  const ok = await confirmed({
    title: "Release the legal hold?",
    body: "Retention applies again: the next purge removes every event older than the policy"
      + " keeps, those the hold kept past their time included, and they cannot be brought back."
      + " This deployment may keep releases to its operator.",
    action: "Release the hold",
  });
  if (ok) await setHold({ on: false }, "Legal hold released (recorded as retention.legal_hold_released).");
}

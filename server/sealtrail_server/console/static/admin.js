// The console's admin views: API tokens, sinks (their edits and replays), alert
// rules, retention (its limits), the legal hold, the tenant's erasure (ADR 0069)
// and the action catalogue's descriptions. Each change is one request to the
// console's API, which makes the RPC with this tab's token: the API checks the
// role, records the change (with the browser's address) and refuses what it
// refuses, in its own words, naming the field at fault, which the page marks. A
// sink, a rule, the policy or the hold is changed only as this page last read
// it (its etag): one changed meanwhile is refused, and the view is read again.

import { hexOf } from "./base64.js";

const $ = (selector, root = document) => root.querySelector(selector);

let api;  // console.js's request function
let signOut;
let filterFields;  // console.js's: the search's filter parameters a form holds
let fillFilter;  // and the reverse
let catalogued;  // console.js's: the catalogue's descriptions, as the Actions view read them
let described;  // and one description, as an edit left it
let readCatalogue;  // and its read of every page of the catalogue (up to its bound)

// What each view last read: a row's buttons act on these, etags included.
const read = {
  tokensNext: "", tokensShown: new Set(), sinks: [], rules: [], policy: null, hold: null,
  limits: { min: 0, max: 0 }, deadLetters: null,  // the replay form's: { sink, next }
};

const LOADERS = {
  "admin-tokens": loadTokens, "admin-sinks": loadSinks, "admin-alerts": loadAlerts,
  "admin-retention": loadRetention, "admin-actions": loadActions,
};

export function setUpAdmin(context) {
  ({ api, signOut, filterFields, fillFilter, catalogued, described, readCatalogue } = context);
  $("#token-create").addEventListener("submit", createToken);
  $("#action-describe").addEventListener("submit", describeNew);
  setUpSinkForm(context.filterRow);
  setUpReplay();
  setUpRuleForm(context.filterRow);
  setUpRetentionForm();
  setUpErasure();
  for (const box of document.querySelectorAll(".secret")) {
    $(".secret-copy", box).addEventListener("click", () => copySecret(box));
    $(".secret-done", box).addEventListener("click", () => hideSecret(box));
  }
  $("#tokens-more").addEventListener("click", () => loadTokens({ more: true }));
  $("#hold-place").addEventListener("submit", placeHold);
  $("#hold-reason").addEventListener("submit", changeHoldReason);
  $("#hold-release").addEventListener("click", releaseHold);
  $("#confirm-cancel").addEventListener("click", () => $("#confirm").close("cancel"));
  $("#confirm-typed").addEventListener("input", () => {
    const { typed, shown } = $("#confirm").dataset;
    const value = $("#confirm-typed").value;
    $("#confirm-ok").disabled = value !== typed && value !== shown;
  });
}

// Read afresh each time a view is shown: another admin (or the CLI) may have
// changed anything since.
export function showAdminView(id) {
  const section = document.getElementById(id);
  clearMessages(section);
  return LOADERS[id]();
}

// A secret is shown once: in the view it was made in, until that view is left.
// Opening the view again reads it afresh, without the secret (helper-187).
export function hideSecretsOutside(id) {
  for (const box of document.querySelectorAll(".secret")) {
    if (!box.closest(`#${id}`)) hideSecret(box);
  }
}

// Everything the admin views hold, the secrets shown once first, and what was
// typed in their forms (a Splunk token, a chat channel's URL): the tab's next
// session may be another admin's, of another tenant.
export function clearAdmin() {
  for (const box of document.querySelectorAll(".secret")) hideSecret(box);
  for (const section of document.querySelectorAll("section.view[id^='admin-']")) {
    for (const body of section.querySelectorAll("tbody")) body.replaceChildren();
    for (const form of section.querySelectorAll("form")) {
      form.reset();
      clearMarks(form);
    }
    clearMessages(section);
  }
  resetSinkForm();
  resetErasure();
  $("#admin-actions .truncated").hidden = true;
  $("#retention-policy").replaceChildren();
  $("#retention-limits").replaceChildren();
  $("#legal-hold-state").replaceChildren();
  $("#sink-replay").hidden = true;
  for (const part of $("#retention-form").querySelectorAll(".default, .rules")) part.replaceChildren();
  Object.assign(read, {
    tokensNext: "", sinks: [], rules: [], policy: null, hold: null, limits: { min: 0, max: 0 },
    deadLetters: null,
  });
  resetRuleForm();  // the sinks to tick gone too
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
// revoked, by this page perhaps) signs out. The fields it names are marked in
// `form` and said by their labels, so that what to put right is plain.
function failed(section, error, what, form = null) {
  if (error.signedOut) return;  // the next session's page is not this one's to mark
  if (error.status === 401) { signOut(error); return; }
  $(".done", section).textContent = "";
  const named = form ? markFields(form, error.fields || []) : [];
  $(".error", section).textContent = error.reason === "ETAG_MISMATCH"
    ? `${what} changed since this page read it: nothing was changed. It is shown again as it`
      + " is now: check it and try again."
    : named.length ? named.join("; ") : error.message;
}

// Kinds of conditions and destinations, as the API's field paths name them.
const KIND_PATH = /^(match|threshold|spike|new_ip|new_country|off_hours|webhook|splunk_hec|datadog_logs|elasticsearch|chat|pagerduty|email)\./;

// The input (or group of inputs) of `form` that holds a field the API names:
// rule.threshold.count, rule.match.filter.actions[0], policy.rules[1].days,
// sink.splunk_hec.token. Those whose path is no input's name say it as
// `data-field`, the longest matching one winning.
function inputFor(form, path) {
  const marked = [...form.querySelectorAll("[data-field]")].filter(({ dataset: { field } }) => (
    path === field || path.startsWith(`${field}.`) || path.startsWith(`${field}[`)));
  if (marked.length) return marked.sort((a, b) => b.dataset.field.length - a.dataset.field.length)[0];
  const name = path.replace(/^(rule|sink|policy)\./, "").replace(KIND_PATH, "").replace(/^filter\./, "")
    .split(/[.[]/)[0];
  const found = form.elements.namedItem(name);
  if (found instanceof RadioNodeList) return found[0]?.closest("fieldset") || null;
  return found || form.querySelector(`[data-field^="${name}."]`);
}

// How the page labels an input: its label's words, its group's name before them.
function fieldName(element) {
  const holder = element.tagName === "FIELDSET" ? $("legend", element) : element.closest("label");
  let words = "";
  if (holder) {
    const copy = holder.cloneNode(true);
    for (const control of copy.querySelectorAll("input, select")) control.remove();
    words = copy.textContent.replace(/\s+/g, " ").trim();
  }
  words ||= element.getAttribute("aria-label") || element.dataset.field || element.name;
  const group = element.closest("[data-label]")?.dataset.label;
  return group ? `${group}, ${words}` : words;
}

// Marks the inputs holding the fields an error names; their words, to show.
function markFields(form, fields) {
  const said = [];
  let first = null;
  for (const { field, description } of fields) {
    const element = inputFor(form, field);
    if (element) {
      element.setAttribute("aria-invalid", "true");
      first ??= element;
    }
    // A list typed one a line (an email sink's recipients): its item by its line.
    const item = element?.tagName === "TEXTAREA" && /\[(\d+)\]$/.exec(field);
    const where = item ? `, line ${Number(item[1]) + 1}` : "";
    said.push(`${element ? fieldName(element) + where : field}: ${description}`);
  }
  if (first && first.tagName !== "FIELDSET" && first.tagName !== "DIV") first.focus();
  return said;
}

function clearMarks(form) {
  for (const element of form.querySelectorAll("[aria-invalid]")) element.removeAttribute("aria-invalid");
}

// Shows the fields of the kind chosen (a sink's, a rule's) and only those:
// the others are disabled too, so that they are neither required nor sent.
// A field marked `data-group-by` is shown only with that grouping chosen too
// (a threshold's or spike's exact actor ids, per actor only).
function showKind(form) {
  const kind = form.elements.kind.value;
  for (const element of form.querySelectorAll("[data-kinds]")) {
    const { groupBy } = element.dataset;
    const shown = element.dataset.kinds.split(" ").includes(kind)
      && (groupBy === undefined || form.elements.group_by.value === groupBy);
    element.hidden = !shown;
    if (element.tagName === "FIELDSET") element.disabled = !shown;
    for (const input of element.querySelectorAll("input, select, textarea")) input.disabled = !shown;
  }
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
// The prefixes of the enums a filter holds, whose values the form takes in lower case.
const ENUM = /^(ROLE|CATEGORY|OUTCOME|SEVERITY|ACTOR_TYPE|PRESENCE)_/;
const label = (value) => (ENUM.test(value || "")
  ? value.replace(ENUM, "").toLowerCase().replace(/_/g, " ") : text(value));

function cell(row, value, className) {
  const td = row.insertCell();
  td.textContent = text(value);
  if (className) td.className = className;
  return td;
}

// Whether "Times in UTC" is on: kept in the page's URL (`utc=1`), which says it
// in every view, an admin view opened by its link included (the switch, above
// the events, is set from the URL only once they are shown).
export const inUtc = () => new URLSearchParams(location.search).get("utc") === "1";

// An instant as the console shows it, in every view: in the viewer's zone, the
// zone named ("GMT+5:30", "CET"): without it a screenshot, or a colleague
// elsewhere, read the time as their own; or in UTC, "UTC" named, with "Times in
// UTC" on, for an investigation beside logs kept in UTC.
export const when = (time) => new Date(time).toLocaleString(undefined,
  inUtc() ? { timeZone: "UTC", timeZoneName: "short" } : { timeZoneName: "short" });

// A time as `when` says it, UTC on hover; `none` when there is none.
function timeCell(row, time, none) {
  const td = cell(row, time ? when(time) : none);
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

// What a name may not hold (server/sealtrail_server/domain/names.py): characters
// that show nothing or reorder the text around them. A name stored before the
// API refused them may still hold one: shown, each is a \u escape. An event's
// fields may hold any (console.js): they are shown so too.
const HIDDEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\u115F\u1160\u3164\uFFA0]/gu;
// The same but C0 controls, which JSON.stringify escapes itself but for the
// line breaks of its indentation.
const HIDDEN_IN_JSON = /[\u007F-\u009F\p{Cf}\p{Zl}\p{Zp}\u115F\u1160\u3164\uFFA0]/gu;

export function visibleName(name) {
  return text(name).replace(HIDDEN, (char) => {
    const code = char.codePointAt(0).toString(16).padStart(4, "0");
    return code.length > 4 ? `\\u{${code}}` : `\\u${code}`;
  });
}

// `value` as indented JSON, those characters in it as JSON's own \u escapes
// (a character past U+FFFF as its two halves): still JSON, of the same value.
export function visibleJson(value) {
  return JSON.stringify(value, null, 2).replace(HIDDEN_IN_JSON, (char) => Array.from(char.split(""),
    (half) => `\\u${half.charCodeAt(0).toString(16).padStart(4, "0")}`).join(""));
}

// `value` as `visibleJson` writes it, as the nodes to show: each string (a key
// or a value) isolated, the JSON around it kept in the page's order. Shown as
// one text, a right-to-left key and its value were one run, shown backwards
// ("ערך": "מפתח"), and a number went before its right-to-left key. Its text is
// the JSON's, copied as it is.
export function isolatedJson(value) {
  const written = visibleJson(value);
  const nodes = [];
  let at = 0;
  for (const string of written.matchAll(/"((?:[^"\\]|\\.)*)"/g)) {
    const inner = document.createElement("bdi");
    inner.textContent = string[1];  // escaped by `visibleJson` already
    nodes.push(`${written.slice(at, string.index)}"`, inner, "\"");
    at = string.index + string[0].length;
  }
  nodes.push(written.slice(at));
  return nodes;
}

// A name within words, shown as `visibleName` and isolated from them: a
// right-to-left name cannot move the words around it (a cell's "type: name",
// a list of names: two right-to-left ones with only punctuation between them
// were one run, shown backwards in the left-to-right page).
export function isolated(name) {
  const made = document.createElement("bdi");
  made.textContent = visibleName(name);
  return made;
}

// `names`, each `isolated`, between the words `between`: the nodes to show.
export function isolatedList(names, between = ", ") {
  return names.flatMap((name, at) => (at ? [between, isolated(name)] : [isolated(name)]));
}

// Asks before a change that cannot be taken back; with `typed`, the OK stays
// disabled until that name is typed (a sink's deletion), as it is or as shown
// (`visibleName`). `title`: words, or an array of words and `isolated` names.
// Resolves true on OK.
function confirmed({ title, body, action, typed = "" }) {
  const dialog = $("#confirm");
  $("#confirm-title").replaceChildren(...[title].flat());
  $("#confirm-text").textContent = body;
  $("#confirm-ok").textContent = action;
  $("#confirm-typed-label").hidden = !typed;
  $("#confirm-name").replaceChildren(isolated(typed));
  $("#confirm-typed").value = "";
  dialog.dataset.typed = typed;
  dialog.dataset.shown = visibleName(typed);
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
    if (key === "details_equals") {  // a map: "details environment=prod, attempt=3"
      const entries = detailEntries(value);
      if (entries.length) parts.push(`details ${entries.map(([k, v]) => `${k}=${v}`).join(", ")}`);
      continue;
    }
    if (Array.isArray(value) ? !value.length : !value || value === "SEVERITY_UNSPECIFIED") continue;
    const name = key === "min_severity" ? "severity at least" : key.replace(/_/g, " ");
    const shown = Array.isArray(value) ? value.map(label).join(", ")
      : key.startsWith("occurred_") ? when(value) : label(value);
    parts.push(`${name} ${shown}`);
  }
  return parts.length ? parts.join("; ") : "every event";
}

// A filter's `details_equals` (a JSON object) as its entries, sorted by key.
const detailEntries = (map) => Object.entries(map || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

// Whether the search's `detail` parameter (KEY=VALUE, comma-separated, each
// trimmed, the key up to the first `=`) carries an entry as it is: a comma, an
// `=` in the key, or a space at either end it cannot.
const carried = ([key, value]) => ![key, value].some((one) => one.includes(",") || one !== one.trim())
  && !key.includes("=") && key !== "";

// Whether a role can be written in the Actor role field (comma-separated,
// each trimmed): not one with a comma, nor one with a space at either end.
const roleCarried = (role) => !role.includes(",") && role === role.trim();

// The Details and Actor role fields of a rule's or sink's form filled from
// `filter`: if an entry or a role cannot be written there, the form notes what
// it showed, and saving it unchanged is refused (`uncarried`), never the entry
// dropped or the role split unsaid.
function noteDetails(form, filter) {
  delete form.dataset.detailShown;
  delete form.dataset.rolesShown;
  if (!detailEntries(filter.details_equals).every(carried)) {
    form.dataset.detailShown = form.elements.detail.value;
  }
  if (!(filter.actor_roles || []).every(roleCarried)) {
    form.dataset.rolesShown = form.elements.actor_roles.value;
  }
}

// The refusal of a rule's or sink's form whose Details or Actor role field
// still shows a filter it cannot carry (see noteDetails); null if there is none.
function uncarried(form) {
  const fields = [];
  if (form.dataset.detailShown !== undefined && form.elements.detail.value === form.dataset.detailShown) {
    fields.push({ field: "filter.detail", description: "an entry holds a comma, an = in its key or an edge"
      + " space: it cannot be written here; change it with the API or sealtrail --detail, or type the"
      + " entries anew" });
  }
  if (form.dataset.rolesShown !== undefined && form.elements.actor_roles.value === form.dataset.rolesShown) {
    fields.push({ field: "filter.actor_roles", description: "a role holds a comma or an edge space: it"
      + " cannot be written here; change it with the API or sealtrail --role, or type the roles anew" });
  }
  return fields.length ? { message: fields.map((one) => one.description).join("; "), fields } : null;
}

// "1 event", "2,001 events": the page's one way to put a count before a noun
// (console.js's too).
export const count = (n, word) => `${Number(n).toLocaleString()} ${word}${Number(n) === 1 ? "" : "s"}`;

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
  cell(row, visibleName(token.name) || "(no name)");
  cell(row, label(token.role));
  cell(row, token.token_id, "id");
  timeCell(row, token.create_time, "");
  timeCell(row, token.expire_time, "never");
  timeCell(row, token.last_use_time, "none recorded yet");
  const expired = token.expire_time && new Date(token.expire_time) <= new Date();
  if (token.revoke_time) {
    timeCell(row, token.revoke_time).textContent = `revoked ${when(token.revoke_time)}`;
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
// in this tab's page only, until "I have stored it", leaving its view or
// signing out; the API never gives it again. `unsure`: the change went unanswered, and may have
// been made (its box says so, if it has words for it).
function showSecret(box, secret, name, { unsure = false } = {}) {
  $(".secret-value", box).value = secret;
  $(".secret-name", box).textContent = `“${name}”`;
  $(".secret-status", box).textContent = "";
  for (const words of box.querySelectorAll(".unsure")) words.hidden = !unsure;
  box.hidden = false;
  $(".secret-value", box).focus();
  $(".secret-value", box).select();
}

function hideSecret(box) {
  $(".secret-value", box).value = "";
  $(".secret-status", box).textContent = "";
  for (const words of box.querySelectorAll(".unsure")) words.hidden = true;
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
    title: ["Revoke the token “", isolated(name), "”?"],
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
  elasticsearch: "Elasticsearch", chat: "chat", pagerduty: "PagerDuty", email: "email" };

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

// What a newer Sealtrail release stored, met by this one's server during a rolling
// upgrade (docs/operations.md): the API shows it with what it knows, a sink with
// this sign opening its `state.last_error`, a rule with no condition, and
// refuses every change of it. The page marks it so and offers no change.
const NEWER = "made by a newer Sealtrail release";
const sinkFromNewerRelease = (sink) => (sink.state?.last_error || "").startsWith(`${NEWER}: `);

// The row's buttons, each disabled, after the words saying why.
function leftToNewerRelease(actions, offered) {
  const said = document.createElement("span");
  said.className = "newer";
  said.textContent = NEWER;
  for (const each of offered) {
    each.disabled = true;
    each.title = `${NEWER}: change it through a server of that release`;
  }
  actions.append(said, " ", ...offered);
}

function sinkRow(sink) {
  const row = document.createElement("tr");
  row.dataset.id = sink.id;
  const kind = Object.keys(SINK_KINDS).find((name) => sink[name]);
  cell(row, visibleName(sink.name));
  cell(row, SINK_KINDS[kind] || "unknown");
  lines(row.insertCell(), whereTo(kind, sink[kind] || {})).className = "id";
  const format = sink.format === "PAYLOAD_FORMAT_OCSF" ? " (OCSF)" : "";
  cell(row, filterWords(sink.filter) + format);
  lines(row.insertCell(), delivery(sink));
  cell(row, sink.paused ? "paused" : "active", sink.paused ? "bad" : "");
  const actions = row.insertCell();
  actions.className = "actions";
  if (sink.managed) {
    // The deployment's operator keeps it (`sealtrail-server sink`): the API
    // refuses this tenant's changes to it, so none is offered.
    actions.textContent = "kept by the operator";
    return row;
  }
  const newer = sinkFromNewerRelease(sink);
  const offered = [];
  // A kind this page has no form for (a newer server's) is not offered to edit.
  if (DESTINATION_FIELDS[kind] || newer) offered.push(button("Edit", () => editSink(sink)));
  offered.push(
    button(sink.paused ? "Resume" : "Pause", () => pauseSink(sink)),
    button("Replay…", () => openReplay(sink)),
    button("Delete", () => deleteSink(sink), "danger"),
  );
  if (newer) leftToNewerRelease(actions, offered);
  else actions.append(...offered);
  return row;
}

// Where a sink sends, its credentials by their hints only (as the API answers
// them: it never gives a secret back).
function whereTo(kind, destination) {
  if (kind === "email") return mailedTo(destination);
  const url = destination.url || destination.url_hint
    || (kind === "datadog_logs" ? "https://http-intake.logs.datadoghq.com (default)" : "")
    || (kind === "pagerduty" ? "https://events.pagerduty.com (default)" : "");
  const parts = [[url]];
  if (destination.index) parts.push([`index ${destination.index}`]);
  if (destination.token_hint) parts.push([`token …${destination.token_hint}`]);
  if (destination.api_key_hint) parts.push([`API key …${destination.api_key_hint}`]);
  if (destination.routing_key_hint) parts.push([`routing key …${destination.routing_key_hint}`]);
  if (destination.secret_hints?.length) {
    parts.push([`signing secret …${destination.secret_hints.join(", …")}`]);
  }
  return parts;
}

// An email sink's SMTP server (as the API names it, `smtp://host:port`, the
// port its security's default when none is set), how it is secured, its login
// (the password by its hint), its sender and recipients.
const SMTP_SECURITY = { starttls: ["smtp", 587, "STARTTLS"], implicit_tls: ["smtps", 465, "implicit TLS"],
  none: ["smtp", 25, "plain text, loopback"] };

function mailedTo(destination) {
  const [scheme, port, secured] = SMTP_SECURITY[destination.security || "starttls"]
    || [destination.security, 0, destination.security];
  const host = (destination.host || "").includes(":") ? `[${destination.host}]` : destination.host;
  const parts = [[`${scheme}://${host}:${Number(destination.port) || port} (${secured})`]];
  if (destination.username) {
    const hint = destination.password_hint ? `, password …${destination.password_hint}` : "";
    parts.push([`login ${destination.username}${hint}`]);
  }
  // Display names are the admin's words: their bidi and invisible characters escaped.
  parts.push([`from ${visibleName(destination.from_address)}`]);
  parts.push([`to ${(destination.to_addresses || []).map(visibleName).join(", ")}`]);
  return parts;
}

// A sink's delivery state in a few lines: lag, last error, dead letters (and why
// the oldest was parked).
function delivery(sink) {
  const state = sink.state || {};
  const lag = Number(state.lag_events || 0);
  const parts = [[lag ? `${count(lag, "event")} behind` : "up to date"]];
  if (state.last_delivery_time) {
    parts.push([`last delivered ${when(state.last_delivery_time)}`]);
  } else {
    parts.push(["nothing delivered yet"]);
  }
  if (state.last_error) {
    const at = state.last_error_time ? ` (${when(state.last_error_time)})` : "";
    // The destination's words: its bidi and invisible characters escaped, as a name's.
    parts.push([`last error${at}: ${visibleName(state.last_error)}`, "bad"]);
    const failures = Number(state.consecutive_failures || 0);
    const next = state.next_attempt_time
      ? `, next attempt ${when(state.next_attempt_time)}` : "";
    if (failures) parts.push([`${count(failures, "failure")} in a row${next}`, "bad"]);
  }
  const dead = Number(state.dead_letters || 0);
  if (dead) parts.push([`${count(dead, "dead letter")} (sealtrail sinks dead-letters)`, "bad"]);
  // Why the oldest waiting was parked, where no failure holds the sink (the
  // console's API reads it then): a dead letter sets no last error. The
  // destination's words, as text, escaped as the last error's are.
  const parked = state.last_error ? "" : sink.oldest_dead_letter?.error;
  if (dead && parked) parts.push([`oldest dead letter: ${visibleName(parked)}`, "bad"]);
  const replays = Number(state.pending_replays || 0);
  if (replays) parts.push([`${count(replays, "replay")} pending`]);
  return parts;
}

// The credential of each kind, write only: the API answers its hint (its last
// four characters, a chat URL with its secret parts elided), never the value.
const CREDENTIALS = { chat: ["url", "url_hint"], splunk_hec: ["token", "token_hint"],
  datadog_logs: ["api_key", "api_key_hint"], elasticsearch: ["api_key", "api_key_hint"],
  pagerduty: ["routing_key", "routing_key_hint"], email: ["password", "password_hint"] };
const PLACEHOLDERS = { url: "the receiving end's https URL", token: "", api_key: "", routing_key: "",
  password: "" };

// The sink form adds a sink, or edits one (`dataset.id`): its filter is the
// event search's own fields, copied (the time range left out: a sink sends what
// comes), as the rule form's is, so that a sink filters as a search does.
function setUpSinkForm(filterRow) {
  const form = $("#sink-create");
  const fields = filterRow.cloneNode(true);
  for (const name of ["range", "from", "to"]) fields.querySelector(`[name="${name}"]`).closest("label").remove();
  form.elements.namedItem("filter").append(fields);
  form.addEventListener("submit", saveSink);
  form.elements.kind.addEventListener("change", () => showSinkKind(form));
  form.elements.secret.addEventListener("change", () => showSinkKind(form));
  $(".cancel", form).addEventListener("click", resetSinkForm);
  resetSinkForm();
}

function showSinkKind(form) {
  const editing = Boolean(form.dataset.id);
  const kind = form.elements.kind.value;
  showKind(form);
  // What only an edit has (the signing secret's choice), or only a new sink.
  for (const element of form.querySelectorAll(".edit-only, .create-only")) {
    const ofKind = !element.dataset.kinds || element.dataset.kinds.split(" ").includes(kind);
    const shown = ofKind && editing === element.classList.contains("edit-only")
      && (!element.classList.contains("typed-secret") || form.elements.secret.value === "typed");
    element.hidden = !shown;
    for (const input of element.querySelectorAll("input, select, textarea")) input.disabled = !shown;
  }
  // Empty: the account's default site; in an edit, a credential left as it is.
  form.elements.url.required = !["datadog_logs", "pagerduty"].includes(kind) && !(editing && kind === "chat");
  form.elements.index.required = kind === "elasticsearch";
  for (const name of ["token", "api_key", "routing_key"]) form.elements[name].required = !editing;
}

// The form back to adding a sink, empty.
function resetSinkForm() {
  const form = $("#sink-create");
  form.reset();
  clearMarks(form);
  for (const key of ["id", "etag", "name", "kind", "kept", "detailShown", "rolesShown"]) delete form.dataset[key];
  form.elements.kind.disabled = false;
  form.elements.secret.options[0].text = "keep the current one";
  for (const [name, words] of Object.entries(PLACEHOLDERS)) form.elements[name].placeholder = words;
  $("#sink-form-title").textContent = "Add a sink";
  $("button[type=submit]", form).textContent = "Add sink";
  $(".cancel", form).hidden = true;
  showSinkKind(form);
}

// Opens the sink in the form, as read: saving sends the etag it was read with.
// Its credentials are not the page's to show: each input is left empty, its
// hint in its placeholder, and stays as it is unless typed again.
function editSink(sink) {
  const form = $("#sink-create");
  const fields = form.elements;
  const kind = Object.keys(SINK_KINDS).find((name) => sink[name]);
  const destination = sink[kind] || {};
  resetSinkForm();
  Object.assign(form.dataset, { id: sink.id, etag: sink.etag, name: sink.name, kind });
  fields.kind.value = kind;
  fields.kind.disabled = true;  // a sink of another kind is another sink
  fields.name.value = sink.name;
  const [credential, hint] = CREDENTIALS[kind] || [];
  for (const name of DESTINATION_FIELDS[kind]) {
    if (name !== credential) fields[name].value = shownValue(name, destination[name]);
  }
  // An email sink's password only with a login, its hint only past eight characters.
  if (credential && (kind !== "email" || destination.username)) {
    fields[credential].placeholder = destination[hint]
      ? `unchanged (${kind === "chat" ? "" : "…"}${destination[hint]})` : "unchanged";
  }
  const hints = destination.secret_hints || [];
  fields.secret.options[0].text = `keep the current one${hints.length > 1 ? "s" : ""}`
    + (hints.length ? ` (…${hints.join(", …")})` : "");
  fields.format.value = sink.format === "PAYLOAD_FORMAT_OCSF" ? "ocsf" : "";
  const { occurred_after: after, occurred_before: before, ...filter } = sink.filter || {};
  // A time bound no field of the form holds is sent back as it was.
  form.dataset.kept = JSON.stringify({ ...(after && { occurred_after: after }),
    ...(before && { occurred_before: before }) });
  fillFilter(form, searchParams(filter));
  noteDetails(form, filter);
  showSinkKind(form);
  $("#sink-form-title").replaceChildren("Edit the sink “", isolated(sink.name), "”");
  $("button[type=submit]", form).textContent = "Save changes";
  $(".cancel", form).hidden = false;
  form.scrollIntoView({ block: "nearest" });
  fields.name.focus();
}

// A webhook's signing secret, made here as `sealtrail sinks create
// --generate-secret` makes one: 32 random bytes, base64, after `whsec_`.
function webhookSecret() {
  return `whsec_${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))}`;
}

// The fields of each kind of destination the form has; those left empty are
// the API's defaults (Datadog's URL, Splunk's source, ...), or, for a
// credential in an edit, the sink's own.
const DESTINATION_FIELDS = {
  webhook: ["url"], chat: ["url"], splunk_hec: ["url", "token", "index", "source", "sourcetype"],
  datadog_logs: ["url", "api_key", "service", "tags"], elasticsearch: ["url", "index", "api_key"],
  pagerduty: ["url", "routing_key", "source"],
  email: ["host", "port", "security", "username", "password", "from_address", "to_addresses"],
};

// A destination's field as its input shows it: a list one a line (an email
// sink's recipients), a port of 0 (its security's default) and a security
// left empty (STARTTLS) as the form chooses them.
function shownValue(name, value) {
  if (Array.isArray(value)) return value.join("\n");
  if (name === "port" && !Number(value)) return "";
  if (name === "security") return value || "starttls";
  return text(value);
}

// A credential typed here (a token, an API key) is sent once, in the request
// that creates or edits the sink; the form is cleared, and the API answers its
// hint only.
function destinationOf(kind, fields) {
  const destination = {};
  for (const name of DESTINATION_FIELDS[kind]) {
    const value = fields[name].value.trim();
    if (!value) continue;
    if (fields[name].tagName === "TEXTAREA") {  // one a line, blank lines skipped
      destination[name] = value.split("\n").map((line) => line.trim()).filter(Boolean);
    } else {
      destination[name] = fields[name].type === "number" ? Number(value) : value;
    }
  }
  return destination;
}

// What the API names when a change needs a sink's credentials typed again (its
// URL moved, or they can no longer be opened): the input that holds them.
const CREDENTIAL_PATHS = { webhook: "sink.webhook.secrets", chat: "sink.chat.url",
  splunk_hec: "sink.splunk_hec.token", datadog_logs: "sink.datadog_logs.api_key",
  elasticsearch: "sink.elasticsearch.api_key", pagerduty: "sink.pagerduty.routing_key",
  email: "sink.email.password" };

async function saveSink(event) {
  event.preventDefault();
  const section = $("#admin-sinks");
  const form = event.target;
  const fields = form.elements;
  const submit = form.querySelector("button[type=submit]");
  const editing = form.dataset.id;
  const kind = editing ? form.dataset.kind : fields.kind.value;
  const name = fields.name.value.trim();
  const choice = editing ? fields.secret.value : "generate";
  const secret = kind === "webhook" && choice === "generate" ? webhookSecret() : "";
  const sink = { name, [kind]: destinationOf(kind, fields) };
  if (secret) sink.webhook.secrets = [secret];
  if (kind === "webhook" && choice === "typed") sink.webhook.secrets = [fields.typed_secret.value.trim()];
  if (kind !== "chat" && fields.format.value === "ocsf") sink.format = "PAYLOAD_FORMAT_OCSF";
  const filter = { ...JSON.parse(form.dataset.kept || "{}"), ...filterFields(form) };
  clearMessages(section);
  clearMarks(form);
  const refused = uncarried(form);
  if (refused) { failed(section, refused, `The sink ${form.dataset.name || name}`, form); return; }
  submit.disabled = true;
  try {
    const answer = editing
      ? await change(`/api/sinks/${encodeURIComponent(editing)}`, "PUT", { sink, filter, etag: form.dataset.etag })
      : await change("/api/sinks", "POST", { sink, filter, from_beginning: fields.from_beginning.checked });
    if (secret) showSecret($("#sink-secret"), secret, name);
    resetSinkForm();
    say(section, !editing ? `Sink ${name} added (recorded as sink.created).`
      : answer.event_id ? `Sink ${name} changed (recorded as sink.updated).`
        : `Sink ${name} was already so: nothing changed.`);
    await loadSinks();
  } catch (error) {
    if (["SINK_SECRETS_REQUIRED", "SINK_SECRETS_UNOPENABLE"].includes(error.reason)) {
      error.fields = [{ field: CREDENTIAL_PATHS[kind], description: error.message }];
    }
    failed(section, error, `The sink ${form.dataset.name || name}`, form);
    // No answer of the API's (the connection cut, a proxy's 502 or 504) or a
    // server's failure: the sink may exist, or have changed, signing with this
    // secret, which no one else has. Shown, saying so, as `sealtrail sinks
    // create` does.
    if (secret && !error.signedOut && (error.status === undefined || error.status >= 500)) {
      showSecret($("#sink-secret"), secret, name, { unsure: true });
      await loadSinks();
    }
    if (error.reason === "ETAG_MISMATCH") {
      await loadSinks();
      const now = read.sinks.find((one) => one.id === editing);
      if (now) editSink(now); else resetSinkForm();
    }
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
    if (error.status === 401 || error.signedOut) return;
  }
  await loadSinks();
}

async function deleteSink(sink) {
  const section = $("#admin-sinks");
  const ok = await confirmed({
    title: ["Delete the sink “", isolated(sink.name), "”?"],
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
    if (error.status === 401 || error.signedOut) return;
  }
  await loadSinks();
}

// A replay sends a sink's events again: a time range, a seq range, or a dead
// letter's. It is no change of the sink, so it carries no etag (ADR 0069).
function setUpReplay() {
  const form = $("#sink-replay");
  form.addEventListener("change", (event) => { if (event.target.name === "kind") showSelection(form); });
  form.addEventListener("submit", requestReplay);
  $(".cancel", form).addEventListener("click", () => { form.hidden = true; });
  $("#dead-letters-more").addEventListener("click", listDeadLetters);
}

function showSelection(form) {
  const chosen = form.elements.kind.value;
  for (const label of form.querySelectorAll("[data-selection]")) {
    const shown = label.dataset.selection === chosen;
    label.hidden = !shown;
    for (const input of label.querySelectorAll("input, select")) input.disabled = !shown;
  }
}

async function openReplay(sink) {
  const section = $("#admin-sinks");
  const form = $("#sink-replay");
  clearMessages(section);
  clearMarks(form);
  form.reset();
  Object.assign(form.dataset, { id: sink.id, name: sink.name });
  $(".sink-name", form).replaceChildren("“", isolated(sink.name), "”");
  const letters = form.elements.dead_letter_id;
  letters.replaceChildren(new Option("reading…", ""));
  $("#dead-letters-more").hidden = true;
  read.deadLetters = { sink, next: "" };
  showSelection(form);
  form.hidden = false;
  form.scrollIntoView({ block: "nearest" });
  form.elements.kind[0].focus();
  await listDeadLetters();
}

// The API lists a sink's dead letters oldest first, 1,000 a page: the others
// are said to be there, not left out as if there were none, and More dead
// letters lists the next page below those listed.
async function listDeadLetters() {
  const section = $("#admin-sinks");
  const letters = $("#sink-replay").elements.dead_letter_id;
  const more = $("#dead-letters-more");
  const listing = read.deadLetters;
  const { sink, next } = listing;
  more.disabled = true;
  try {
    const path = `/api/sinks/${encodeURIComponent(sink.id)}/dead-letters`;
    const params = next ? new URLSearchParams({ page_token: next }) : null;
    const page = await (await api(path, params)).json();
    if (read.deadLetters !== listing) return;  // the form was opened again meanwhile
    const found = page.dead_letters.map(deadLetterOption);
    if (next) {
      letters.lastElementChild?.remove();  // the line saying others are there
      letters.append(...found);
    } else {
      letters.replaceChildren(...(found.length ? found
        : [new Option("none: the destination refused nothing for good", "")]));
    }
    listing.next = page.next_page_token;
    if (listing.next) {
      const listed = letters.options.length;
      const all = Math.max(Number(sink.state?.dead_letters || 0), listed + 1);
      const rest = new Option(`… the oldest ${listed.toLocaleString()} of this sink's`
        + ` ${count(all, "dead letter")} are listed: More dead letters lists the next`, "");
      rest.disabled = true;
      letters.add(rest);
    }
    more.hidden = !listing.next;
  } catch (error) {
    failed(section, error, `The sink ${sink.name}`);
  } finally {
    more.disabled = false;
  }
}

function deadLetterOption(letter) {
  const seqs = letter.first_seq === letter.last_seq ? `seq ${letter.first_seq}`
    : `seqs ${letter.first_seq}–${letter.last_seq}`;
  return new Option(`${seqs} (${count(letter.event_count, "event")}), HTTP ${letter.http_status}`
    + ` on ${when(letter.create_time)}: ${visibleName(letter.error)}`, letter.id);
}

// The ReplaySinkRequest of the form, as the API's JSON names it (a range's
// ends are instants: the inputs hold the viewer's wall-clock time).
function selectionOf(fields) {
  const chosen = fields.kind.value;
  if (chosen === "window") {
    return { window: { start_time: new Date(fields.start_time.value).toISOString(),
      end_time: new Date(fields.end_time.value).toISOString() } };
  }
  if (chosen === "seq_range") {
    return { seq_range: { first_seq: fields.first_seq.value, last_seq: fields.last_seq.value } };
  }
  return { dead_letter_id: fields.dead_letter_id.value };
}

async function requestReplay(event) {
  event.preventDefault();
  const form = event.target;
  const section = $("#admin-sinks");
  const { id, name } = form.dataset;
  clearMessages(section);
  clearMarks(form);
  try {
    await change(`/api/sinks/${encodeURIComponent(id)}/replay`, "POST", selectionOf(form.elements));
    form.hidden = true;
    say(section, `Replay of ${name} requested (recorded as sink.replay_requested): its Delivery`
      + " shows it pending until it is sent.");
    await loadSinks();
  } catch (error) {
    failed(section, error, `The sink ${name}`, form);
  }
}

// --- alert rules ------------------------------------------------------------------

const GROUPS = {
  ALERT_GROUP_BY_ACTOR: " per actor", ALERT_GROUP_BY_IP: " per IP",
  ALERT_GROUP_BY_CREDENTIAL: " per credential",
};
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
      showSinkChoices(checkedSinks());
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
    const { count, window_seconds: window, group_by: group, exact_actor_ids: exact, filter } = rule.threshold;
    const ids = exact ? " (ids compared exactly)" : "";
    return `${count} within ${duration(window)}${GROUPS[group] || ""}${ids}: ${filterWords(filter)}`;
  }
  if (rule.spike) {
    const {
      window_seconds: window, baseline_windows: windows, factor, min_count: least, group_by: group,
      exact_actor_ids: exact, filter,
    } = rule.spike;
    const ids = exact ? " (ids compared exactly)" : "";
    return `${Number(factor).toLocaleString()}x the average of the ${count(windows, "window")} of`
      + ` ${duration(window)} before, at least ${Number(least).toLocaleString()}${GROUPS[group] || ""}${ids}:`
      + ` ${filterWords(filter)}`;
  }
  if (rule.new_ip) return `an actor from a new IP address: ${filterWords(rule.new_ip.filter)}`;
  if (rule.new_country) return `an actor from a new country: ${filterWords(rule.new_country.filter)}`;
  if (rule.off_hours) {
    const hours = rule.off_hours;
    const days = hours.working_days?.length ? hours.working_days.map((d) => WEEKDAYS[d]).join(" ") : "Mon–Fri";
    return `outside ${hours.start_hour}:00–${hours.end_hour}:00 ${days} (${hours.time_zone || "UTC"}):`
      + ` ${filterWords(hours.filter)}`;
  }
  return `${NEWER} (its condition is not known to this server)`;
}

const ruleFromNewerRelease = (rule) => !RULE_KINDS.some((kind) => rule[kind]);

function ruleRow(rule) {
  const row = document.createElement("tr");
  row.dataset.id = rule.id;
  const names = new Map(read.sinks.map((sink) => [sink.id, sink.name]));
  cell(row, visibleName(rule.name));
  // What the server says may keep the rule from firing as it reads (a
  // country it cannot locate), under its condition.
  const watched = cell(row, condition(rule));
  for (const warning of rule.warnings || []) {
    const said = document.createElement("p");
    said.className = "rule-warning";
    said.textContent = warning;
    watched.append(said);
  }
  const severity = rule.severity === "SEVERITY_UNSPECIFIED" ? "warning" : label(rule.severity);
  cell(row, severity, `severity-${severity}`);
  const sinks = (rule.sink_ids || []).map((id) => (names.has(id) ? names.get(id) : `${id} (deleted)`));
  cell(row, sinks.length ? "" : "none").append(...isolatedList(sinks));  // each isolated, in order
  const fired = Number(rule.fired || 0);
  const last = rule.last_fired_time ? `, last ${when(rule.last_fired_time)}` : "";
  cell(row, fired ? `${count(fired, "time")}${last}` : "never");
  cell(row, rule.disabled ? "disabled" : "enabled", rule.disabled ? "bad" : "");
  const actions = row.insertCell();
  actions.className = "actions";
  const offered = [
    button("Edit", () => editRule(rule)),
    button(rule.disabled ? "Enable" : "Disable", () => disableRule(rule)),
    button("Delete", () => deleteRule(rule), "danger"),
  ];
  if (ruleFromNewerRelease(rule)) leftToNewerRelease(actions, offered);
  else actions.append(...offered);
  return row;
}

const RULE_KINDS = ["match", "threshold", "spike", "new_ip", "new_country", "off_hours"];
const WORKING_DAYS = [1, 2, 3, 4, 5];

// The rule form's filter is the event search's own fields, copied (the time
// range and free text left out: a rule watches what comes, and the API takes
// no text in a rule's filter), so that a rule filters as a search does, and its
// filter is sent as the search's parameters, parsed by the console as theirs.
function setUpRuleForm(filterRow) {
  const form = $("#rule-form");
  const fields = filterRow.cloneNode(true);
  for (const name of ["range", "from", "to", "text"]) fields.querySelector(`[name="${name}"]`).closest("label").remove();
  form.elements.namedItem("filter").append(fields);
  form.elements.kind.addEventListener("change", () => showKind(form));
  form.elements.group_by.addEventListener("change", () => showKind(form));
  form.addEventListener("submit", saveRule);
  $(".cancel", form).addEventListener("click", resetRuleForm);
  showKind(form);
}

// The tenant's sinks to choose from, those of `chosen` ticked.
function showSinkChoices(chosen) {
  const box = $("#rule-form").elements.namedItem("sinks");
  for (const old of box.querySelectorAll("label")) old.remove();
  // Not the operator's sinks: the API refuses a rule that routes to one.
  const own = read.sinks.filter((sink) => !sink.managed);
  $(".none", box).hidden = own.length > 0;
  for (const sink of own) {
    const label = document.createElement("label");
    label.className = "toggle";
    const tick = document.createElement("input");
    Object.assign(tick, { type: "checkbox", name: "sink_ids", value: sink.id, checked: chosen.includes(sink.id) });
    label.append(tick, ` ${visibleName(sink.name)}`);
    box.append(label);
  }
}

function checkedSinks() {
  return [...$("#rule-form").querySelectorAll("[name=sink_ids]:checked")].map((tick) => tick.value);
}

function resetRuleForm() {
  const form = $("#rule-form");
  form.reset();
  clearMarks(form);
  for (const key of ["id", "etag", "name", "detailShown", "rolesShown"]) delete form.dataset[key];
  showSinkChoices([]);
  showKind(form);
  $("#rule-form-title").textContent = "New alert rule";
  $("button[type=submit]", form).textContent = "Create rule";
  $(".cancel", form).hidden = true;
}

// An API filter (its JSON) as the event search's parameters: the form's values.
function searchParams(filter) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filter)) {
    if (key === "details_equals") {  // the search's `detail`: KEY=VALUE, comma-separated
      const entries = detailEntries(value);
      if (entries.length) params.set("detail", entries.map(([k, v]) => `${k}=${v}`).join(","));
      continue;
    }
    const values = (Array.isArray(value) ? value : [value])
      .map((one) => (ENUM.test(one) ? one.replace(ENUM, "").toLowerCase() : text(one)))
      .filter((one) => one && one !== "unspecified");
    if (values.length) params.set(key, values.join(","));
  }
  return params;
}

// Opens the rule in the form, as read: saving it sends the etag it was read with.
function editRule(rule) {
  const form = $("#rule-form");
  const fields = form.elements;
  const kind = RULE_KINDS.find((name) => rule[name]);
  const condition = rule[kind] || {};
  resetRuleForm();
  Object.assign(form.dataset, { id: rule.id, etag: rule.etag, name: rule.name });
  fields.name.value = rule.name;
  fields.kind.value = kind || "match";
  if (kind === "threshold") {
    fields.count.value = condition.count;
    fields.window_seconds.value = condition.window_seconds;
    fields.group_by.value = condition.group_by === "ALERT_GROUP_BY_UNSPECIFIED" ? "" : condition.group_by;
    fields.exact_actor_ids.checked = Boolean(condition.exact_actor_ids);  // kept unless unticked
  } else if (kind === "spike") {
    fields.spike_window.value = condition.window_seconds;
    fields.baseline_windows.value = condition.baseline_windows;
    fields.factor.value = condition.factor;
    fields.min_count.value = condition.min_count;
    // Each group against its own average (ADR 0147); kept unless changed, as a threshold's.
    fields.group_by.value = !condition.group_by || condition.group_by === "ALERT_GROUP_BY_UNSPECIFIED"
      ? "" : condition.group_by;
    fields.exact_actor_ids.checked = Boolean(condition.exact_actor_ids);  // kept unless unticked
  } else if (kind === "off_hours") {
    fields.time_zone.value = condition.time_zone;
    fields.start_hour.value = condition.start_hour;
    fields.end_hour.value = condition.end_hour;
    const days = condition.working_days?.length ? condition.working_days : WORKING_DAYS;
    for (const day of form.querySelectorAll("[name=day]")) day.checked = days.includes(Number(day.value));
  }
  fields.severity.value = ["SEVERITY_UNSPECIFIED", "SEVERITY_WARNING"].includes(rule.severity) ? "" : rule.severity;
  fillFilter(form, searchParams(condition.filter || {}));
  noteDetails(form, condition.filter || {});
  showSinkChoices(rule.sink_ids || []);
  showKind(form);
  $("#rule-form-title").replaceChildren("Edit the alert rule “", isolated(rule.name), "”");
  $("button[type=submit]", form).textContent = "Save changes";
  $(".cancel", form).hidden = false;
  form.scrollIntoView({ block: "nearest" });
  fields.name.focus();
}

// The condition the form describes, as the API's JSON names it (its filter
// goes apart, as the search's parameters).
function conditionOf(kind, form) {
  const fields = form.elements;
  if (kind === "threshold") {
    const condition = { count: Number(fields.count.value), window_seconds: Number(fields.window_seconds.value) };
    if (fields.group_by.value) condition.group_by = fields.group_by.value;
    // Per actor only (hidden and disabled otherwise): the API refuses it with another grouping.
    if (!fields.exact_actor_ids.disabled && fields.exact_actor_ids.checked) condition.exact_actor_ids = true;
    return condition;
  }
  if (kind === "spike") {
    const condition = {
      window_seconds: Number(fields.spike_window.value), baseline_windows: Number(fields.baseline_windows.value),
      factor: Number(fields.factor.value), min_count: Number(fields.min_count.value),
    };
    if (fields.group_by.value) condition.group_by = fields.group_by.value;
    // Per actor only, as a threshold's (hidden and disabled otherwise).
    if (!fields.exact_actor_ids.disabled && fields.exact_actor_ids.checked) condition.exact_actor_ids = true;
    return condition;
  }
  if (kind === "off_hours") {
    return {
      time_zone: fields.time_zone.value.trim(), start_hour: Number(fields.start_hour.value),
      end_hour: Number(fields.end_hour.value),
      working_days: [...form.querySelectorAll("[name=day]:checked")].map((day) => Number(day.value)),
    };
  }
  return {};
}

async function saveRule(event) {
  event.preventDefault();
  const section = $("#admin-alerts");
  const form = event.target;
  const submit = $("button[type=submit]", form);
  const kind = form.elements.kind.value;
  const rule = { name: form.elements.name.value.trim(), [kind]: conditionOf(kind, form), sink_ids: checkedSinks() };
  if (form.elements.severity.value) rule.severity = form.elements.severity.value;
  const body = { rule, filter: filterFields(form) };
  const editing = form.dataset.id;
  if (editing) body.etag = form.dataset.etag;
  clearMessages(section);
  clearMarks(form);
  const refused = uncarried(form);
  if (refused) { failed(section, refused, `The rule ${form.dataset.name || rule.name}`, form); return; }
  submit.disabled = true;
  try {
    const answer = editing
      ? await change(`/api/alert-rules/${encodeURIComponent(editing)}`, "PUT", body)
      : await change("/api/alert-rules", "POST", body);
    say(section, !editing ? `Rule ${rule.name} created (recorded as alert_rule.created).`
      : answer.event_id ? `Rule ${rule.name} changed (recorded as alert_rule.updated).`
        : `Rule ${rule.name} was already so: nothing changed.`);
    resetRuleForm();
    await loadAlerts();
  } catch (error) {
    failed(section, error, `The rule ${form.dataset.name || rule.name}`, form);
    if (error.reason === "ETAG_MISMATCH") {
      await loadAlerts();
      const now = read.rules.find((one) => one.id === editing);
      if (now) editRule(now); else resetRuleForm();
    }
  } finally {
    submit.disabled = false;
  }
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
    if (error.status === 401 || error.signedOut) return;
  }
  await loadAlerts();
}

async function deleteRule(rule) {
  const section = $("#admin-alerts");
  const ok = await confirmed({
    title: ["Delete the alert rule “", isolated(rule.name), "”?"],
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
    if (error.status === 401 || error.signedOut) return;
  }
  await loadAlerts();
}

// --- retention and legal hold -------------------------------------------------------

const keptFor = (days) => (Number(days) ? count(days, "day") : "forever");

// The range of days the operator allows the tenant's limits (RetentionLimits,
// ADR 0071): `min`, the deployment's floor, and `max`, the tenant's plan; 0,
// none. The API judges every policy; these say beforehand what it will refuse,
// in its words, and how it applies a policy stored before the range changed
// (domain/retention.py's RetentionLimits.problem and applied).
const PLAN = "this tenant's plan";
const FLOOR = "this deployment's minimum";

function limitsOf(limits = {}) {
  return { min: Number(limits.min_days || 0), max: Number(limits.max_days || 0) };
}

function refusal(days, { min, max }) {
  if (max && (days === 0 || days > max)) return `over ${PLAN}`;
  if (days > 0 && days < min) return `under ${FLOOR}`;
  return "";
}

function applied(days, { min, max }) {
  if (max && (days === 0 || days > max)) return `${keptFor(days)}, applied as ${count(max, "day")} (${PLAN})`;
  if (days > 0 && days < min) return `${keptFor(days)}, applied as ${count(min, "day")} (${FLOOR})`;
  return keptFor(days);
}

function showLimits(limits) {
  const { min, max } = limits;
  definitions($("#retention-limits"), [
    ["Shortest allowed", min ? `at least ${count(min, "day")}, ${FLOOR}` : "any number of days"],
    ["Longest allowed", max ? `at most ${count(max, "day")}, ${PLAN}: forever is not allowed`
      : "forever"],
  ]);
  const words = min && max ? `at least ${min} and at most ${count(max, "day")} (forever is not allowed)`
    : min ? `at least ${count(min, "day")}, or forever` : max ? `at most ${count(max, "day")} (forever is not allowed)` : "";
  const hint = $("#retention-form .limits");
  hint.textContent = words ? `The operator allows limits of ${words}: the choices beyond them are`
    + " disabled, and a number typed beyond them is refused." : "";
  hint.hidden = !words;
}

async function loadRetention() {
  const section = $("#admin-retention");
  await busy(section, async () => {
    try {
      const { policy, legal_hold: hold, limits } = await (await api("/api/retention")).json();
      read.policy = policy;
      read.limits = limitsOf(limits);
      showLimits(read.limits);
      showPolicy(policy);
      showPolicyForm(policy);
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
  const days = (value) => applied(Number(value || 0), read.limits);
  const entries = [["Kept by default", days(policy.default_days)]];
  for (const rule of policy.rules || []) {
    const what = rule.category ? `category ${label(rule.category)}` : `actions ${rule.action_prefix}`;
    entries.push(["Except", `${what}: ${days(rule.days)}`]);
  }
  entries.push(["Last changed", policy.update_time ? when(policy.update_time) : "never"]);
  const list = document.createElement("dl");
  list.className = "fields";
  $("#retention-policy").replaceChildren(definitions(list, entries));
}

// The presets of docs/retention.md, and any number of days besides.
const DAY_PRESETS = [[30, "30 days (30d)"], [90, "90 days (90d)"], [180, "180 days (180d)"],
  [365, "1 year (1y)"], [0, "forever"]];
const CATEGORIES = ["authentication", "data_access", "configuration", "member", "billing", "security",
  "system", "api_usage"];

function setUpRetentionForm() {
  const form = $("#retention-form");
  form.addEventListener("submit", savePolicy);
  $(".add-category", form).addEventListener("click", () => {
    addRetentionRule({ category: "CATEGORY_AUTHENTICATION", days: 365 }, { focus: true });
  });
  $(".add-prefix", form).addEventListener("click", () => {
    addRetentionRule({ action_prefix: "", days: 90 }, { focus: true });
  });
}

// A number of days: a preset, or another number (required once chosen: an
// empty one must not pass for 0, which keeps forever). The presets the
// operator's limits refuse are disabled, saying why; a number typed beyond
// them is the API's to refuse, naming whose limit it is.
function daysPicker(words, days) {
  const label = document.createElement("label");
  label.className = "days";
  const preset = document.createElement("select");
  preset.className = "days-preset";
  for (const [number, name] of DAY_PRESETS) {
    const why = refusal(number, read.limits);
    const option = new Option(why ? `${name}: ${why}` : name, String(number));
    option.disabled = Boolean(why);
    preset.add(option);
  }
  preset.add(new Option("another number of days", "other"));
  const other = document.createElement("input");
  const { min, max } = read.limits;
  Object.assign(other, { type: "number", min: 1, max: 36500, className: "days-other",
    placeholder: min || max ? `${min || 1} ${max ? `to ${max}` : "or more"}` : "" });
  other.setAttribute("aria-label", `${words}: days`);
  const known = DAY_PRESETS.some(([number]) => number === days);
  preset.value = known ? String(days) : "other";
  other.value = known ? "" : String(days);
  const showOther = () => {
    other.hidden = other.disabled = preset.value !== "other";
    other.required = !other.hidden;
  };
  preset.addEventListener("change", () => { showOther(); if (!other.hidden) other.focus(); });
  showOther();
  label.append(`${words} `, preset, other);
  return label;
}

function daysOf(label) {
  const preset = $(".days-preset", label).value;
  return preset === "other" ? Number($(".days-other", label).value) : Number(preset);
}

// The editor, as the policy was read: saving sends that policy's etag.
function showPolicyForm(policy) {
  const form = $("#retention-form");
  clearMarks(form);
  $(".default", form).replaceChildren(daysPicker("Kept by default", Number(policy.default_days || 0)));
  $(".rules", form).replaceChildren();
  for (const rule of policy.rules || []) addRetentionRule(rule);
}

function addRetentionRule(rule, { focus = false } = {}) {
  const row = document.createElement("div");
  row.className = "retention-rule";
  const label = document.createElement("label");
  if (rule.category) {
    const select = document.createElement("select");
    select.name = "category";
    for (const name of CATEGORIES) select.add(new Option(name.replace(/_/g, " "), `CATEGORY_${name.toUpperCase()}`));
    select.value = rule.category;
    label.append("Events of the category ", select);
  } else {
    const input = document.createElement("input");
    Object.assign(input, { name: "action_prefix", placeholder: "rag.*", required: true, value: rule.action_prefix || "" });
    label.append("Events whose action starts with ", input);
  }
  row.append(label, daysPicker("kept", Number(rule.days || 0)),
    button("Remove", () => row.remove(), "danger"));
  $("#retention-form .rules").append(row);
  if (focus) $("input, select", row).focus();
}

// The policy the editor holds, as the API's JSON names it; each input is
// labelled with the path the API names it by, to mark the one it refuses.
function policyOf(form) {
  const rules = [...form.querySelectorAll(".retention-rule")].map((row, index) => {
    const path = `policy.rules[${index}]`;
    Object.assign(row.dataset, { field: path, label: `Rule ${index + 1}` });
    const selector = $("[name=category], [name=action_prefix]", row);
    selector.dataset.field = `${path}.${selector.name}`;
    const days = $("label.days", row);
    days.dataset.field = `${path}.days`;
    return { [selector.name]: selector.value.trim(), days: daysOf(days) };
  });
  const byDefault = $(".default label.days", form);
  byDefault.dataset.field = "policy.default_days";
  return { default_days: daysOf(byDefault), rules };
}

// What a preview says, in words: what the policy keeps less long than now
// (its record will be a warning), and what it would remove now.
function previewWords(preview) {
  const said = [];
  if (preview.shortened.length) {
    said.push("It keeps these events less long than now (the change is recorded as a warning):");
    for (const cut of preview.shortened) {
      said.push(`• ${cut.events}: ${keptFor(cut.before_days)} → ${keptFor(cut.after_days)}`);
    }
  }
  const removed = Number(preview.events || 0);
  said.push(removed
    ? `The next purge removes ${preview.at_least ? "at least " : ""}${count(removed, "event")} for good:`
    : "It would remove no event now.");
  for (const rule of preview.rules || []) {
    if (Number(rule.events)) said.push(`• ${rule.rule}: ${rule.at_least ? "at least " : ""}${count(rule.events, "event")}`);
  }
  if (preview.legal_hold) said.push("The legal hold is on: nothing is removed until it is released.");
  return said.join("\n");
}

// Previews the policy first, as `sealtrail retention set` does, and asks
// before one that keeps anything less long or removes anything now.
async function savePolicy(event) {
  event.preventDefault();
  const section = $("#admin-retention");
  const form = event.target;
  const submit = $("button[type=submit]", form);
  clearMessages(section);
  clearMarks(form);
  const body = { policy: policyOf(form), etag: read.policy.etag };
  submit.disabled = true;
  try {
    const preview = await change("/api/retention/preview", "POST", body);
    const shortens = preview.shortened.length > 0;
    if (shortens || Number(preview.events || 0)) {
      const ok = await confirmed({
        title: shortens ? "This change shortens retention" : "This policy removes events",
        body: previewWords(preview),
        action: "Save the policy",
      });
      if (!ok) return;
    }
    const answer = await change("/api/retention", "PUT", body);
    say(section, !answer.event_id ? "The policy was already so: nothing changed."
      : shortens ? "Retention policy changed, shortening retention (recorded as"
        + " retention.policy_updated, a warning)."
        : "Retention policy changed (recorded as retention.policy_updated).");
    await loadRetention();
  } catch (error) {
    failed(section, error, "The retention policy", form);
    if (error.reason === "ETAG_MISMATCH") await loadRetention();
  } finally {
    submit.disabled = false;
  }
}

function showHold(hold) {
  read.hold = hold;
  const changed = hold.update_time ? when(hold.update_time) : "never";
  definitions($("#legal-hold-state"), [
    ["Status", hold.on ? "On: nothing of this tenant is purged or erased" : "Off"],
    ...(hold.on ? [["Reason", visibleName(hold.reason)]] : []),  // free text: shown as a name is
    [hold.on ? "Placed" : "Last changed", changed],
  ]);
  $("#hold-place").hidden = hold.on;
  // The reason as held, to edit in place: a matter renamed, or a second case.
  $("#hold-reason").hidden = !hold.on;
  $("#hold-reason").elements.reason.value = hold.on ? hold.reason : "";
  $("#hold-release").hidden = !hold.on;
  $("#erasure .hold-note").hidden = !hold.on;
}

async function setHold(body, done) {
  const section = $("#admin-retention");
  clearMessages(section);
  try {
    const answer = await change("/api/legal-hold", "PUT", { ...body, etag: read.hold.etag });
    showHold(answer.legal_hold);
    // No event id: the hold was already as asked, and nothing was recorded.
    say(section, answer.event_id ? done : "The legal hold was already so: nothing changed.");
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

// The held reason replaced: SetLegalHold on with the new one, which the API
// records with the reason it replaces (details.previous_reason). Asked first,
// as placing is; the reason as it is (spaces around it are not kept) is no
// change, and nothing is asked or sent.
async function changeHoldReason(event) {
  event.preventDefault();
  const reason = event.target.elements.reason.value.trim();
  const previous = read.hold.reason;
  if (reason === previous.trim()) {
    say($("#admin-retention"), "The legal hold already has this reason: nothing changed.");
    return;
  }
  const ok = await confirmed({
    title: "Change the legal hold's reason?",
    body: `The hold stays on; its reason changes from ${visibleName(previous)} to ${visibleName(reason)}.`
      + " The change is recorded with the reason it replaces.",
    action: "Change the reason",
  });
  if (ok) {
    await setHold({ on: true, reason },
      "Legal hold reason changed (recorded as retention.legal_hold_placed, with the previous reason).");
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

// --- the tenant's erasure -----------------------------------------------------------

// Erasing asks for the tenant's id typed back, the API's own confirmation
// (EraseTenantRequest.confirm_tenant_id, compared with the token's tenant),
// then for a confirmation saying what goes and what remains. The API refuses
// it under a legal hold, or where the operator keeps erasures, in its words.
function setUpErasure() {
  $("#erasure-form").addEventListener("submit", eraseTenant);
  $("#erasure-receipt .download").addEventListener("click", downloadReceipt);
}

async function eraseTenant(event) {
  event.preventDefault();
  const section = $("#admin-retention");
  const form = event.target;
  const typed = form.elements.confirm_tenant_id.value.trim();
  const ok = await confirmed({
    title: ["Erase the tenant “", isolated(typed), "”?"],
    body: "Every event of its log, its tokens (this tab's included), sinks, alert rules, retention"
      + " policy and settings are removed for good: this cannot be undone. What remains is the"
      + " erasure's receipt, with the log's signed final checkpoint, shown here once done.",
    action: "Erase the tenant",
  });
  if (!ok) return;
  const submit = $("button[type=submit]", form);
  clearMessages(section);
  clearMarks(form);
  submit.disabled = true;
  try {
    const { receipt, check } = await change("/api/erasure", "POST", { confirm_tenant_id: typed });
    form.reset();
    form.hidden = true;
    showReceipt(receipt, check);
    say(section, `Tenant ${receipt.tenant_id} erased: its receipt is below.`);
  } catch (error) {
    failed(section, error, "The tenant", form);
  } finally {
    submit.disabled = false;
  }
}

const hex = (base64) => hexOf(base64 || "");

// Whether the receipt is signed, and whether its signature verifies against
// the keys the deployment registers (the console server's check): one kept
// before receipts were signed has none, and nothing proves it.
function signatureWords(check = {}) {
  if (!check.signed) {
    return ["Unsigned: this receipt was kept before erasure receipts were signed. Nothing proves"
      + " who erased the tenant, when, or that it was erased.", "bad"];
  }
  if (!check.verified) {
    return [`Signed, but its signature DOES NOT VERIFY against this deployment's registered keys: ${
      check.problem}`, "bad"];
  }
  const names = (check.signed_by || []).map((key) => key.split("+").slice(0, 2).join("+"));
  return [`Signed: its signature verifies against this deployment's registered keys`
    + ` (${names.join(", ")}).`, ""];
}

function showReceipt(receipt, check) {
  const box = $("#erasure-receipt");
  const removed = Object.entries(receipt.removed_rows || {}).filter(([, rows]) => Number(rows))
    .map(([table, rows]) => `${table} ${Number(rows).toLocaleString()}`).join(", ");
  definitions($("dl", box), [
    ["Tenant", receipt.tenant_id],
    ["Erased by token", receipt.erased_by_token_id],
    ["Erased", when(receipt.erase_time)],
    ["Final size", count(receipt.final_tree_size || 0, "event")],
    ["Final root hash", hex(receipt.final_root_hash)],
    ["Rows removed", removed || "none"],
    ["Signature", signatureWords(check)[0]],
  ]);
  const signature = [...$("dl", box).querySelectorAll("dd")].at(-1);
  signature.className = signatureWords(check)[1];
  $(".signed-note", box).textContent = receipt.signed_receipt
    || "(none: kept before erasure receipts were signed)";
  $(".note", box).textContent = receipt.final_checkpoint?.note || "(none: the log was empty)";
  box.dataset.receipt = JSON.stringify(receipt, null, 2);
  box.dataset.tenant = receipt.tenant_id;
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}

function downloadReceipt() {
  const box = $("#erasure-receipt");
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([box.dataset.receipt], { type: "application/json" }));
  link.download = `sealtrail-erasure-${box.dataset.tenant}.json`;
  document.body.append(link);
  link.click();
  link.remove();
}

function resetErasure() {
  const box = $("#erasure-receipt");
  box.hidden = true;
  $("dl", box).replaceChildren();
  $(".signed-note", box).textContent = "";
  $(".note", box).textContent = "";
  delete box.dataset.receipt;
  delete box.dataset.tenant;
  $("#erasure-form").hidden = false;
  $("#erasure .hold-note").hidden = true;
}

// --- the action catalogue ------------------------------------------------------------

// Every action of the tenant (ListActionCatalog, recorded as a read of the log,
// once a listing), by name, each with its description in an input to edit in
// place: page after page, as many as the page's catalogue reads (console.js).
async function loadActions() {
  const section = $("#admin-actions");
  await busy(section, async () => {
    try {
      const answer = await readCatalogue();
      catalogued(answer.entries);  // the events' detail reads these too
      $("#actions-table tbody").replaceChildren(...answer.entries.map(actionRow));
      $(".empty", section).hidden = answer.entries.length > 0;
      const cut = $(".truncated", section);
      cut.hidden = !answer.truncated;
      cut.textContent = answer.truncated
        ? `The first ${count(answer.entries.length, "action")} of ${Number(answer.total_entries).toLocaleString()}`
          + " are listed, by name: describe another by its name above, or with `sealtrail actions`."
        : "";
    } catch (error) {
      failed(section, error, "The actions");
    }
  });
}

function actionRow(entry) {
  const row = document.createElement("tr");
  row.dataset.action = entry.action;
  cell(row, visibleName(entry.action));
  cell(row, Number(entry.count).toLocaleString(), "number");
  timeCell(row, entry.last_occurred_time, "not recorded yet");
  const form = document.createElement("form");
  form.className = "describe";
  const holder = document.createElement("label");
  const words = document.createElement("span");
  words.className = "visually-hidden";
  words.textContent = `Description of ${visibleName(entry.action)}`;
  const input = document.createElement("input");
  input.name = "description";
  input.autocomplete = "off";
  input.value = entry.description;  // text, as stored (redacted)
  holder.append(words, input);
  const save = document.createElement("button");
  save.type = "submit";
  save.textContent = "Save";
  save.setAttribute("aria-label", `Save the description of ${visibleName(entry.action)}`);
  const setBy = document.createElement("span");
  setBy.className = "set-by hint";
  form.append(holder, save, setBy);
  showSetBy(setBy, entry);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    describe(form, entry.action);
  });
  row.insertCell().append(form);
  return row;
}

// Who last set a description, and when (the admin token's id, as the log records it).
function showSetBy(line, entry) {
  const category = entry.category ? `category ${entry.category}, ` : "";
  line.textContent = entry.update_time
    ? `${category}set ${when(entry.update_time)} by token ${entry.updated_by}` : "";
}

// Sets (or, empty, clears) an action's description as `form` holds it; no
// confirmation: the change is recorded, the description before it with it.
async function describe(form, action, { reload = false } = {}) {
  const section = $("#admin-actions");
  clearMessages(section);
  clearMarks(form);
  const input = form.elements.description;
  const typed = input.value;
  const submit = form.querySelector("button[type=submit]");
  submit.disabled = true;
  try {
    // The description alone: the category the catalogue declares stays as
    // stored, even one declared elsewhere since this view read it.
    const answer = await change(`/api/actions/${encodeURIComponent(action)}`, "PUT", { description: typed });
    const { entry } = answer;
    described(action, entry.description);
    const name = visibleName(action);
    if (!answer.event_id) {
      say(section, `The description of ${name} was already so: nothing changed.`);
    } else if (!entry.description) {
      say(section, `The description of ${name} was cleared (recorded as action_catalog.updated).`);
    } else {
      // As stored: a secret pasted into it is redaction's placeholder now (ADR 0141).
      const redacted = entry.description !== typed
        ? " Redaction changed it: it is shown as stored, reword it if a rule caught it by mistake." : "";
      say(section, `The description of ${name} was set (recorded as action_catalog.updated).${redacted}`);
    }
    if (reload) {
      form.reset();
      await loadActions();  // its row, new or not
    } else {
      input.value = entry.description;
      showSetBy($(".set-by", form), entry);
    }
  } catch (error) {
    failed(section, error, `The action ${visibleName(action)}`, form);
  } finally {
    submit.disabled = false;
  }
}

// An action not listed (not recorded yet, or past the first thousand) described by its name.
async function describeNew(event) {
  event.preventDefault();
  const form = event.target;
  const typed = form.elements.action.value;
  await describe(form, typed.trim() || typed, { reload: true });  // only spaces: the API says why
}

// The Sealtrail console: sign in with a token (kept in this tab's session
// storage) or through the organisation's identity provider, filter (reflected
// in the URL), expand rows, follow live, export, and check an event's
// inclusion proof against the signed checkpoint. An admin token also gets the
// admin views (admin.js), one per URL fragment.

import {
  clearAdmin, count, hideSecretsOutside, isolatedJson, isolatedList, setUpAdmin, showAdminView,
  visibleName, when,
} from "./admin.js";
import { fromBase64 as bytes, hexOf as hex } from "./base64.js";
import {
  addToBreakdown, breakdownCount, breakdownToUrl, clearBreakdown, loadBreakdown, setUpBreakdown,
  urlToBreakdown,
} from "./breakdown.js";
import {
  addToChart, chartCount, clearChart, dropCount, emptyChart, loadChart, setUpChart,
} from "./chart.js";
import { sha256 as sha256Pieces } from "./vendor/noble-hashes/sha2.js";

// A sign-in through the identity provider comes back as `/#signin=<code>`
// (ADR 0140): the one-time code is taken out of the address before anything
// else runs, so that no history entry, bookmark, copied link or later script
// keeps it. `init` exchanges it for the session's token (`finishSignIn`).
const handedCode = takeSignInCode();

function takeSignInCode() {
  if (!location.hash.startsWith("#signin=")) return null;
  const code = location.hash.slice("#signin=".length);
  history.replaceState(history.state, "", location.pathname + location.search);
  return code;
}

const TOKEN_KEY = "sealtrail.token";
// The token's role, as the sign-in said: only what the page shows depends on
// it (the API decides what each call may do, whatever the page believes).
const ROLE_KEY = "sealtrail.role";
// This sign-in's mark, which the tab's history entries it makes carry (`ownEntry`).
const SESSION_KEY = "sealtrail.session";
// The person a sign-in through the identity provider named, kept for a session
// it began only: its token was minted for this tab, and Sign out revokes it.
const PERSON_KEY = "sealtrail.person";
// What a minted token's name adds to the person's (sign_in.py's NAME_SUFFIX).
const MINTED_SUFFIX = " (console)";
// URL fragment -> the admin view's section.
const ADMIN_VIEWS = { tokens: "admin-tokens", sinks: "admin-sinks", alerts: "admin-alerts",
  retention: "admin-retention", actions: "admin-actions" };
const PRESETS = { "24h": 1, "7d": 7, "30d": 30, "90d": 90 };
// The most events the table holds (index.html's #capped says it): paged past
// or followed live, a busy tenant's events grew the page until the tab gave out.
const MAX_ROWS = 1000;
// The longest a page of events is waited for (docs/console.md): past it, the
// page says the server did not answer, and Apply or Load more asks again.
const PAGE_SECONDS = 60;
const FILTER_FIELDS = ["actions", "exclude_actions", "categories", "min_severity", "severities", "outcomes", "actor", "actor_email_domain", "resource_type",
  "resource_id", "request_id", "trace_id", "text", "recorded_by", "ip", "country", "user_agent",
  "credential_id", "credential_kind", "actor_types", "countries", "resource_types", "http_status_classes",
  "actor_prefix", "min_duration_ms", "http_routes", "http_route_presence",
  "changed_fields", "detail", "actor_roles"];
// The list fields the form has for `country` and `resource_type`: a URL or a
// sink's filter saying the singular fills them, and one value is sent as the
// singular, which servers older than the list know (they ignore the list).
const SINGULAR_OF = { countries: "country", resource_types: "resource_type" };

const $ = (selector) => document.querySelector(selector);
// `generation` counts the filters applied: a page asked for under an earlier
// one is dropped when it arrives (`page` aborts it), never shown under this one.
// `loaded`: a page of this filter arrived, so Live knows where to start.
// `filter`: the API filter of the view, fixed when it was applied (see `reload`).
const state = {
  nextToken: "", view: "", loading: false, loaded: false, generation: 0, page: null, newestSeq: 0, live: null,
  shown: new Set(), filter: new URLSearchParams(), started: false, liveAdded: 0, search: null,
};

function token() { return sessionStorage.getItem(TOKEN_KEY); }

// The tab's history outlives a session: Back after the next sign-in, perhaps
// another tenant's, went to the searches of the session before, ran them and
// had them recorded in the next tenant's log. Each entry a session makes (its
// searches, the one it signed in on, the views it opens) carries its mark; an
// entry without it is not its own (`searchChanged`).
function sessionMark() { return sessionStorage.getItem(SESSION_KEY); }
let ownSearch = location.search;  // the search of the last entry of this session's

function newSession() {
  sessionStorage.setItem(SESSION_KEY, `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`);
  ownEntry();
}

function ownEntry(address = location.href) {
  history.replaceState({ session: sessionMark() }, "", address);
  ownSearch = location.search;
}

// This tab's session: signing out aborts what it asked and was not answered
// yet. Handled when it came, an answer to the session signed out was shown to
// the next, perhaps another tenant's admin: a token created as its admin left
// showed its secret there, and a view read then showed the first tenant's
// tokens, sinks or policy. Such an answer is an error (`signedOut`), which
// the page shows nowhere.
let session = new AbortController();

function endSession() {
  const ended = new Error("signed out");
  ended.signedOut = true;
  session.abort(ended);
  session = new AbortController();
}

// A request to the console's API with this tab's token; a change (`method`
// other than GET) sends `body` as JSON, the only way the API takes one. An
// error carries the HTTP status, and the API's code, reason and the fields it
// names (INVALID_ARGUMENT's) when it gave them. One without a `signal` of its
// own (those aborted otherwise) ends with the session.
async function api(path, params, { signal, method = "GET", body } = {}) {
  const url = params ? `${path}?${params}` : path;
  const headers = { Authorization: `Bearer ${token()}` };
  if (method !== "GET") headers["Content-Type"] = "application/json";
  const asked = session.signal;
  let response;
  try {
    response = await fetch(url, {
      method, headers, signal: signal ?? asked,
      body: method === "GET" ? undefined : JSON.stringify(body ?? {}),
    });
  } catch (error) {
    if (asked.aborted) throw asked.reason;  // the session ended: shown nowhere
    if (error.name === "AbortError") throw error;
    throw unreached(method === "GET" ? "" : "whether the change was made is not known: look, then");
  }
  if (asked.aborted) throw asked.reason;  // answered as the session ended
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    let answer = {};
    try { answer = await response.json(); message = answer.error || message; } catch { /* not JSON */ }
    // When to ask again, where the answer says (a 429, a 503): else no one knew
    // whether to wait a second or an export window's hour.
    const again = whenAgain(response.headers.get("Retry-After"));
    throw refusal(traced(again ? `${message} (try again in ${again})` : message, response),
      response.status, answer);
  }
  return response;
}

// The API's refusal as an error: the HTTP status (a 401 signs the tab out),
// and the API's code, reason and fields (`answer`, its JSON body or the last
// line of a stream it cut short).
function refusal(message, status, answer) {
  const error = new Error(message);
  error.status = status;
  error.code = answer.code || "";
  error.reason = answer.reason || "";
  error.fields = answer.fields || [];
  return error;
}

// `message` with the trace its answer names (X-Trace-Id), for whoever is asked
// about it to find the server's spans and log lines of the request.
function traced(message, response) {
  const trace = response.headers.get("X-Trace-Id");
  return trace ? `${message} (trace ${trace})` : message;
}

// No answer of the console's server (it stopped, the network went, a proxy
// cut the connection): in the console's words, with what to do. The
// browser's own ("Failed to fetch", "network error") said neither. `then`:
// what to do before trying again (a change's, which may have been made).
function unreached(then = "", lost = false) {
  const what = lost ? "the connection to the console's server was lost"
    : "could not reach the console's server";
  const error = new Error(`${what} (it may be stopped, or the network down): ${then ? `${then} ` : ""}try again`);
  error.unreachable = true;
  return error;
}

// A Retry-After's whole seconds in words ("2 seconds", "59 minutes"); "" for none.
function whenAgain(retryAfter) {
  const seconds = Number(retryAfter);
  if (!retryAfter || !Number.isFinite(seconds) || seconds <= 0) return "";
  return seconds < 120 ? count(Math.ceil(seconds), "second") : count(Math.ceil(seconds / 60), "minute");
}

// --- sign-in ---------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const candidate = $("#token").value.trim();
  $("#signin-error").textContent = "";
  sessionStorage.setItem(TOKEN_KEY, candidate);
  sessionStorage.removeItem(PERSON_KEY);  // a pasted token is only forgotten at sign-out
  try {
    const { role } = await (await api("/api/signin")).json();
    sessionStorage.setItem(ROLE_KEY, role || "");
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("#signin-error").textContent = error.status === 403
      ? "This token may not read the log (a recorder token?)."
      : error.status === 401 ? tokenRefused(error.message) : `Sign-in failed: ${error.message}`;
    return;
  }
  $("#token").value = "";
  $("#signin-reason").textContent = "";  // why the last session ended: this one began
  newSession();  // the search it signed in on (a shared link's) is its own
  showSignedIn();
}

// How else the server signs people in: the identity provider's button, named
// after it, shown when one is set (GET /auth/config); where each organisation
// has its own, after the one this browser last signed in to (the server's
// cookie, the button's way), beside a link to another's. Asked once, before
// the form is first shown, so the focus is put where it stays; unanswered,
// the token field alone signs in.
let signInWays = null;

async function learnSignInWays() {
  let provider = null;
  try {
    const response = await fetch("/auth/config", { signal: AbortSignal.timeout(10e3) });
    if (response.ok) provider = (await response.json()).identity_provider;
  } catch { /* no button: the token field signs in */ }
  if (!provider) return;
  const organisation = provider.organisation || "";
  $("#provider-signin").textContent = organisation
    ? `Sign in to ${organisation}`
    : `Sign in with ${provider.name || "your identity provider"}`;
  $("#another-organisation").hidden = !organisation;
  $("#signin-provider").hidden = false;
}

async function showSignInForm() {
  await signInWays;
  $("#signin").hidden = false;
  focusSignIn();
}

// The form's first way in: the provider's button where there is one.
function focusSignIn() {
  if ($("#signin-provider").hidden) $("#token").focus(); else $("#provider-signin").focus();
}

// A pasted token the API refused: in its words where they say more than
// "unknown" (a malformed one, cut short in the pasting, which the API never
// echoes), else as an unknown or revoked one.
function tokenRefused(said) {
  if (!/^malformed token\b/.test(said)) return "Unknown or revoked token.";
  return `${said.charAt(0).toUpperCase()}${said.slice(1)}.`;
}

// The end of a sign-in through the identity provider: the fragment's one-time
// code exchanged (POST /auth/exchange, once, within a minute) for a token of
// the person's role, kept as a pasted one is. One refused (used already,
// expired) is said on the sign-in form, as a refused token is.
async function finishSignIn(code) {
  if (token()) await leave();  // the tab's session before: this sign-in replaces it
  await signInWays;
  $("#signin").hidden = false;
  $("#signin-error").textContent = "";
  $("#signin-status").textContent = "Finishing the sign-in through your identity provider…";
  let answer;
  try {
    answer = await exchange(code);
  } catch (error) {
    $("#signin-status").textContent = "";
    $("#signin-error").textContent = `Sign-in refused: ${error.message}`;
    focusSignIn();
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, answer.token);
  sessionStorage.setItem(ROLE_KEY, answer.role || "");
  const name = answer.name || "";
  sessionStorage.setItem(PERSON_KEY, name.endsWith(MINTED_SUFFIX) ? name.slice(0, -MINTED_SUFFIX.length) : name);
  $("#signin-status").textContent = "";
  $("#signin-reason").textContent = "";  // why the last session ended: this one began
  newSession();
  showSignedIn();
}

async function exchange(code) {
  let response;
  try {
    response = await fetch("/auth/exchange", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code }),
    });
  } catch {
    throw unreached();
  }
  if (response.status === 404) throw new Error("this console signs in with tokens only (no identity provider is set)");
  let answer = {};
  try { answer = await response.json(); } catch { /* not JSON */ }
  if (!response.ok) throw new Error((answer.error || `${response.status} ${response.statusText}`).replace(/[.\s]+$/, "") + ".");
  return answer;
}

// Sign out pressed. A session the identity provider began has its token
// revoked first (POST /auth/signout): only forgotten here, it went on working
// until its expiry for whoever had copied it. A pasted token is only
// forgotten: it is its owner's, and revoking it is an admin's call. A
// revocation that fails is said, the tab signed out all the same.
async function leave() {
  const secret = token();
  let kept = "";
  if (secret && sessionStorage.getItem(PERSON_KEY) !== null) {
    $("#signout").disabled = true;
    try {
      const response = await fetch("/auth/signout", {
        method: "POST", headers: { Authorization: `Bearer ${secret}` },
      });
      if (!response.ok) {
        let answer = {};
        try { answer = await response.json(); } catch { /* not JSON */ }
        kept = answer.error || `${response.status} ${response.statusText}`;
      }
    } catch {
      kept = unreached().message;
    } finally {
      $("#signout").disabled = false;
    }
  }
  signOut();
  if (kept) {
    const reason = $("#signin-reason");
    reason.textContent = "Signed out of this tab, but the server did not end the session"
      + ` (${kept.replace(/[.\s]+$/, "")}): its token works until it expires, unless an admin`
      + " revokes it (Tokens).";
    reason.focus();
  }
}

// Signing out; with `refused` (the API's 401: the token expired or was revoked),
// saying why on the sign-in form: signed out with no word, the form came back
// as if Sign out had been pressed, and nothing said the token was at fault.
// A 401 may answer a call the page made in the background (the action
// suggestions', the chart's, the breakdown's, Live's) while the analyst types
// in the search: the focus goes to the reason, never to the token field, where
// the keys still coming became a token, signed in with at their Enter (its
// refusal, "Unknown or revoked token.", the only words left on the form). The
// reason stays until a sign-in succeeds: one refused is said beside it.
function signOut(refused) {
  endSession();
  const minted = sessionStorage.getItem(PERSON_KEY) !== null;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(ROLE_KEY);
  sessionStorage.removeItem(SESSION_KEY);
  sessionStorage.removeItem(PERSON_KEY);
  showPerson();
  stopLive();
  forgetEvents();  // the rows shown (an event open among them) go with the session, as
  $("#error").textContent = "";  // the admin views' do: the next may be another tenant's
  unmarkFilter();
  // The search too, from the URL and the form: kept, the next session (another
  // tenant's perhaps) ran it at its sign-in, its log keeping this one's terms.
  history.replaceState(null, "", location.pathname + location.hash);
  $("#filters").reset();
  urlToForm(new URLSearchParams());
  $("#status").textContent = "";
  clearAdmin();  // a token's secret shown once goes with the session
  forgetSuggestions();  // the tenant's actions too: the next may be another's
  forgetCatalogue();
  state.started = false;
  for (const view of document.querySelectorAll("section.view")) view.hidden = true;
  $("#views").hidden = true;
  $("#signout").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = "";
  $("#token").value = "";
  const reason = $("#signin-reason");
  reason.textContent = refused instanceof Error ? signedOutBecause(refused, minted) : "";
  if (reason.textContent) reason.focus(); else focusSignIn();
}

// Why the API refused the tab's token, in words, with the API's own (which
// name an expiry's time; a revoked token is answered as an unknown one). A
// session the identity provider began is the person's, not a token they hold.
function signedOutBecause(refused, minted) {
  const said = refused.message.replace(/[.\s]+$/, "");
  // Rechecked with the identity provider, which ended it (the person removed or
  // disabled there, or their groups changed): the server's words say why.
  if (refused.reason === "IDENTITY_PROVIDER_ENDED_SESSION") {
    return `Signed out: ${said.charAt(0).toUpperCase()}${said.slice(1)}; sign in again.`;
  }
  const expired = /expired/i.test(said);
  if (minted) {
    const why = expired ? "it expired" : "it was revoked";
    return `Signed out: Your session ended (${why}); sign in again. (The server said: ${said}.)`;
  }
  const why = expired ? "Your token expired" : "Your token was revoked (or is unknown here)";
  return `Signed out: ${why}; sign in again with a valid token. (The server said: ${said}.)`;
}

// Who the tab is signed in as, in the header: the person a sign-in through
// the identity provider named (a pasted token names no one).
function showPerson() {
  const person = sessionStorage.getItem(PERSON_KEY);
  $("#signed-in-as").textContent = person ? `Signed in as ${person}` : "";
  $("#signed-in-as").hidden = !person;
}

// --- filters <-> URL ----------------------------------------------------------

// A custom range's ends, in the URL as UTC instants: the inputs hold the wall-clock
// time of the viewer's zone, which a shared link would mean elsewhere in another.
const INSTANTS = ["from", "to"];

// Each value trimmed, as an alert rule's copy of the filter is (`filterFields`):
// an email pasted with a space after it was searched for with the space, and
// matched nothing.
function formToUrl() {
  const form = new FormData($("#filters"));
  const url = new URLSearchParams();
  for (const [name, raw] of form) {
    const value = raw.trim();
    if (value) url.set(name, INSTANTS.includes(name) ? new Date(value).toISOString() : value);
  }
  return choicesToUrl(url);
}

// `url` with the page's choices that are no filter, kept with the search: the
// Breakdown panel's, and "Times in UTC" (`utc=1`; off, the default, left out).
function choicesToUrl(url) {
  if ($("#utc").checked) url.set("utc", "1"); else url.delete("utc");
  return breakdownToUrl(url);
}

// An instant as a datetime-local input shows it: in the viewer's zone, to the
// minute, or to the second or millisecond it has. Cut to the minute, a shared
// link's 09:00:30.250 became 09:00 at the next Apply: a wider window.
function localTime(instant) {
  const time = new Date(instant);
  if (Number.isNaN(time.getTime())) return "";
  const local = new Date(time.getTime() - time.getTimezoneOffset() * 60e3).toISOString();
  return local.slice(0, 23).replace(/\.000$/, "").replace(/T(\d\d:\d\d):00$/, "T$1");
}

// The zone From and To are read in, named beside them: the viewer's wall clock,
// which their labels did not say (read as UTC, they were hours off).
function nameZone() {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
  for (const span of document.querySelectorAll("#filters .zone")) span.textContent = `(your time, ${zone})`;
}

function urlToForm(url) {
  const form = $("#filters");
  fillFilter(form, url);
  if (!url.has("range")) form.elements.range.value = "7d";
  form.classList.toggle("custom-range", form.elements.range.value === "custom");
  urlToBreakdown(url);
  $("#utc").checked = url.get("utc") === "1";
}

// A Breakdown choice or "Times in UTC" changed: written into the address of the
// entry shown, as another look at the same search (replaced: not a search of its
// own, for Back to run again and record).
function keepChoices() {
  const url = String(choicesToUrl(new URLSearchParams(location.search)));
  history.replaceState(history.state, "", `${location.pathname}${url ? `?${url}` : ""}${location.hash}`);
  ownSearch = location.search;
  state.search = location.search;
}

// Sets the filter fields of `form` (the search's, or an alert rule's copy of
// them) that `url` names.
function fillFilter(form, url) {
  for (const element of form.elements) {
    const name = url.has(element.name) ? element.name : SINGULAR_OF[element.name];
    if (!element.name || !name || !url.has(name)) continue;
    const value = url.get(name);
    // A value the list has no choice for (a shared "security,billing") is added as one:
    // else the list showed "Any" while the URL filtered, and the next Apply dropped it.
    if (element.tagName === "SELECT" && ![...element.options].some((o) => o.value === value)) {
      element.add(new Option(value));
    }
    element.value = INSTANTS.includes(element.name) ? localTime(value) : value;
  }
}

// The API filter parameters the filter fields of `form` hold, as the console's
// API reads them from a search's query string (an alert rule's filter too).
function filterFields(form) {
  const params = {};
  for (const name of FILTER_FIELDS) {
    const value = form.elements[name]?.value.trim();
    if (!value) continue;
    params[SINGULAR_OF[name] && !value.includes(",") ? SINGULAR_OF[name] : name] = value;
  }
  return params;
}

function apiFilter(url) {
  const params = new URLSearchParams();
  for (const name of FILTER_FIELDS) if (url.get(name)) params.set(name, url.get(name));
  const range = url.get("range") || "7d";
  if (range in PRESETS) {
    params.set("occurred_after", new Date(Date.now() - PRESETS[range] * 86400e3).toISOString());
  } else if (range === "custom") {
    if (url.get("from")) params.set("occurred_after", new Date(url.get("from")).toISOString());
    if (url.get("to")) params.set("occurred_before", new Date(url.get("to")).toISOString());
  }
  return params;
}

// --- the table ----------------------------------------------------------------

const label = (value) => (value || "")
  .replace(/^(ACTOR_TYPE|CATEGORY|SEVERITY|OUTCOME)_/, "").toLowerCase().replace(/_/g, " ");
const text = (value) => (value === undefined || value === null ? "" : String(value));

// An event's field as text: its hidden and bidi characters as \u escapes
// (`visibleName`), for whoever recorded it may have sent any: an override
// turned "\u202emoc.elpmaxe@nimda" into admin@example.com, and a zero-width
// space made two actors one.
function cell(row, value, className) {
  const td = row.insertCell();
  td.textContent = visibleName(text(value));
  if (className) td.className = className;
  return td;
}

// "Times in UTC" switched: kept in the URL, which `when` and the chart read;
// the rows shown say their times anew, and the chart is counted again, once,
// in the days and hours they are now said in (of UTC, or the viewer's zone).
// Switched again before that count came back, or began, the last switch's
// alone is asked: the one under way is dropped (not yet sent, never sent), one
// waiting its turn skipped. Each was asked in turn before, a read recorded and
// the chart drawn per switch, the last one's waiting on them all.
let switches = 0;
function timesSwitched() {
  keepChoices();
  for (const row of document.querySelectorAll("#events tbody tr.event")) {
    row.querySelector(".opener").textContent = when(row.dataset.occurredAt);
  }
  const generation = state.generation;
  const switched = ++switches;
  if (!state.loaded) return;  // a page on its way: its chart is counted as it comes
  if (state.shown.size) {
    dropCount();
    const current = () => generation === state.generation && switched === switches;
    inTurn(() => (current() ? loadChart(state.filter) : null));
  } else emptyChart(state.filter);
}

// Who acted as audit-log products show it, by name and email, as an address is
// written: "Alice Martin <a@x.io>", the name quoted as a JSON string where it
// would read otherwise ("\"Eve <ceo@x.io>\" <eve@x.io>"), as the command line's
// table shows it; with one of them, email, display name, else id.
function who(actor = {}) {
  if (!(actor.email && actor.display_name)) return [actor.email || actor.display_name || actor.id];
  const name = actor.display_name;
  return [/[<>"()]|^\s|\s$/.test(name) ? JSON.stringify(name) : name, `<${actor.email}>`];
}

// A row of cells under their column headers, opened by a button in its first
// cell: a `<tr role="button">` made its cells a button's content, which a
// screen reader hears as one long button, with no cell nor header (WCAG 1.3.1).
// A mouse may click anywhere on the row: the button's click comes to it too.
function eventRow(event, { fresh = false } = {}) {
  const row = document.createElement("tr");
  row.className = fresh ? "event fresh" : "event";
  row.dataset.seq = event.seq;
  row.dataset.occurredAt = event.occurred_at;
  const time = row.insertCell();
  const opener = document.createElement("button");
  opener.type = "button";
  opener.className = "opener";
  opener.setAttribute("aria-expanded", "false");
  opener.textContent = when(event.occurred_at);  // the browser's words: some locales' hold marks
  time.title = `${event.occurred_at} (UTC)`;
  time.append(opener);
  cell(row, event.action);
  // Name and email each isolated (`who`): a right-to-left name took the email into its run.
  const actor = cell(row, "");
  actor.replaceChildren(...isolatedList(who(event.actor).filter(Boolean), " "));
  // Which of the actor's keys or tokens acted, on a line under it, as the
  // detail says it: kind, id, the secret's last characters `...hint`; each
  // isolated and its hidden characters escaped.
  const credential = event.actor?.credential;
  if (credential) {
    const line = document.createElement("span");
    line.className = "credential";
    line.replaceChildren(...isolatedList([credential.kind, credential.id,
      credential.hint && `...${credential.hint}`].filter(Boolean), " "));
    actor.append(line);
  }
  const resource = event.resource || {};
  // Type and name, each isolated: "חשבון: שלום" was one right-to-left run, the name
  // shown first, and a name of digits went before its type.
  cell(row, "").replaceChildren(...isolatedList([resource.type, resource.name || resource.id]
    .filter(Boolean), ": "));
  // Text only, on one line cut by CSS where long, the whole of it in the title:
  // a description is what whoever recorded the event wrote.
  const description = visibleName(text(event.description));
  const said = cell(row, "", "description");
  said.title = description;
  const line = document.createElement("span");
  line.textContent = description;
  said.append(line);
  const outcome = label(event.outcome);
  cell(row, outcome, `outcome-${outcome}`);
  const severity = label(event.severity);
  cell(row, severity, `severity-${severity}`);
  cell(row, event.context?.ip);
  row.addEventListener("click", () => toggleDetail(row, opener, event));
  return row;
}

function addEvents(events, { atTop = false } = {}) {
  const body = $("#events tbody");
  const rows = [];
  for (const event of events) {
    if (state.shown.has(String(event.seq))) continue;
    state.shown.add(String(event.seq));
    state.newestSeq = Math.max(state.newestSeq, Number(event.seq));
    rows.push(eventRow(event, { fresh: atTop }));
  }
  // Live events come oldest first: reversed, the newest goes on top.
  if (atTop) body.prepend(...rows.reverse()); else body.append(...rows);
  // Said, not only shown: rows added at the top told a screen reader nothing.
  // A count since Live started, so each addition changes the words and is read.
  if (atTop && rows.length) {
    state.liveAdded += rows.length;
    $("#live-status").textContent = `${count(state.liveAdded, "new event")} since Live started`;
  }
  keepNewest(body);
  $("#empty").hidden = body.rows.length > 0;
  // When the first rows showed, for whoever measures the page (make bench).
  if (rows.length && !performance.getEntriesByName("sealtrail-first-rows").length) {
    performance.mark("sealtrail-first-rows");
  }
}

// The newest MAX_ROWS events only: the oldest (at the bottom) go, an open
// detail with its row, and paging ends there, for a next page would follow
// the rows taken off.
function keepNewest(body) {
  const shown = body.querySelectorAll("tr.event");
  if (shown.length < MAX_ROWS) return;
  for (const row of [...shown].slice(MAX_ROWS)) {
    if (row.nextElementSibling?.classList.contains("detail")) row.nextElementSibling.remove();
    state.shown.delete(row.dataset.seq);
    row.remove();
  }
  state.nextToken = "";
  $("#more").hidden = true;
  $("#capped").hidden = false;
}

// Whether a page of the current filter was loaded (false when it failed, took
// longer than PAGE_SECONDS, or another filter took its place). While it comes
// the page says so: an empty table with nothing said was read as "no events"
// or a page that hung, and a server that never answered left it so for good.
async function loadPage() {
  if (state.loading) return false;
  state.loading = true;
  const generation = state.generation;
  const controller = new AbortController();
  state.page = controller;
  $("#error").textContent = "";
  unmarkFilter();
  showLoading(true);
  let late;
  const timedOut = new Promise((_, reject) => {
    late = setTimeout(() => {
      reject(new Error(`The server did not answer within ${PAGE_SECONDS} s: try again, or narrow`
        + " the filter (a shorter time range)"));
      controller.abort();
    }, PAGE_SECONDS * 1e3);
  });
  try {
    const params = new URLSearchParams(state.filter);
    if (state.nextToken) params.set("page_token", state.nextToken);
    // A first page announces the counts drawn beside it: its record says them,
    // and they name its view, for one search to be one record (ADR 0137).
    else for (const count of [chartCount(state.filter), breakdownCount()]) params.append("count", count);
    const page = await Promise.race([timedOut, (async () => (
      await api("/api/events", params, { signal: controller.signal })).json())()]);
    if (generation !== state.generation) return false;
    state.nextToken = page.next_page_token;
    if (page.view) state.view = page.view;
    addEvents(page.events);  // which ends paging at MAX_ROWS
    $("#more").hidden = !state.nextToken;
    state.loaded = true;
    return true;
  } catch (error) {
    if (generation !== state.generation) return false;  // aborted: another filter is loading
    if (error.status === 401) signOut(error); else $("#error").textContent = error.message;
    markFilter(error.fields || []);
    return false;
  } finally {
    clearTimeout(late);
    if (generation === state.generation) {
      state.loading = false;
      state.page = null;
      showLoading(false);
    }
  }
}

// The inputs of the search's filter that a refusal names (the API's
// `filter.ip`, `filter.actions[1]`; the console's own `ip`, `occurred_after`):
// invalid, described by the error that says why. The error alone named no
// input, and who went back to the form heard nothing of which one (WCAG 3.3.1).
const TIME_INPUTS = { occurred_after: "from", occurred_before: "to" };

function markFilter(fields) {
  const form = $("#filters");
  for (const { field } of fields) {
    const name = field.replace(/^filter\./, "").replace(/[[.].*$/, "");
    const input = form.elements.namedItem(TIME_INPUTS[name] || name);
    if (!(input instanceof HTMLElement)) continue;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", "error");
  }
}

function unmarkFilter() {
  for (const input of $("#filters").querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
    input.removeAttribute("aria-describedby");
  }
}

function showLoading(loading) {
  const table = $("#events");
  if (loading) table.setAttribute("aria-busy", "true"); else table.removeAttribute("aria-busy");
  $("#loading").textContent = loading ? "Loading…" : "";
  if (loading) $("#empty").hidden = true;  // until the answer says nothing matches
}

// Takes the rows off the table, and drops a page on its way (`loadPage` drops
// one of an earlier generation when it arrives).
function forgetEvents() {
  state.generation += 1;
  state.page?.abort();
  state.page = null;
  state.loading = false;
  showLoading(false);
  $("#empty").hidden = true;
  state.loaded = false;
  state.view = "";
  state.nextToken = "";
  state.newestSeq = 0;
  state.shown.clear();
  $("#events tbody").replaceChildren();
  $("#more").hidden = true;
  $("#capped").hidden = true;
  clearChart();
  clearBreakdown();
}

function reload() {
  stopLive();
  forgetEvents();
  state.search = location.search;  // the search shown: Back and Forward to another load it
  // Computed once: a preset range ("the last 7 days") read from the clock for
  // each page gave the next page another filter, and its page token was refused.
  state.filter = apiFilter(new URLSearchParams(location.search));
  const generation = state.generation;
  loadPage().then((loaded) => {
    if (generation !== state.generation) return;
    // The chart once the page is shown, and only of a filter that matched: a
    // refused filter is said once, by the search, and a count is recorded as
    // a Query is (counted beside it, each would have been in the other's log).
    // The Breakdown panel's after it: a tenant runs one count at a time (`inTurn`).
    if (loaded && state.shown.size) {
      inTurn(() => (generation === state.generation ? loadChart(state.filter, state.view) : null));
      loadBreakdown(state.filter, state.view);
    } else if (loaded) emptyChart(state.filter);  // Live's events drawn as they come
    if (!$("#live").checked) return;
    // Live starts after the page's newest event: with no page it would not know where.
    if (loaded) startLive(); else $("#live").checked = false;
  });
}

// The page's counts, one after another: a tenant runs one count at a time, and
// the chart's, the Breakdown panel's and the action suggestions' made together
// were refused (429) but the first. `task` runs once those before it settled.
let counted = Promise.resolve();
function inTurn(task) {
  const run = counted.then(task, task);
  counted = run.catch(() => {});
  return run;
}

// A bar of the chart pressed: the search narrowed to its period, a custom range.
function narrowTo(from, to) {
  const url = new URLSearchParams(location.search);
  url.set("range", "custom");
  url.set("from", new Date(from).toISOString());
  url.set("to", new Date(to).toISOString());
  showSearch(url);
}

// A value of the Breakdown panel pressed: the search narrowed to it, its filter
// fields (`filters`: each parameter's value; a resource sets two) set to it as
// if typed there (the events it counted all match the fields' values before, so
// the value alone is the narrower filter). A field with a list form (`country`,
// `countries`) is set in one of them: the list of several left beside the value,
// the API refused the two together, and the form showed the list.
function narrowBy(filters) {
  const url = new URLSearchParams(location.search);
  for (const [field, value] of Object.entries(filters)) {
    for (const [plural, singular] of Object.entries(SINGULAR_OF)) {
      if (field === singular) url.delete(plural);
      if (field === plural) url.delete(singular);
    }
    url.set(field, value);
  }
  showSearch(url);
}

// Makes `url` the search, its fields in the form, and shows it; Live as it was.
function showSearch(url) {
  goTo(url);
  const live = $("#live").checked;  // in the form, but no filter: Live goes on as it was
  $("#filters").reset();
  $("#live").checked = live;
  urlToForm(url);
  reload();
}

// Makes `url` the page's address: a new entry of the tab's history, so that
// Back goes to the search before (replaced, Back left the console), unless
// it is the address already (Apply pressed again).
function goTo(url) {
  const address = `${location.pathname}${String(url) ? `?${url}` : ""}`;
  const entry = { session: sessionMark() };
  if (address === `${location.pathname}${location.search}`) history.replaceState(entry, "", address);
  else history.pushState(entry, "", address);
  ownSearch = location.search;
}

// Back or Forward to another search: its filter in the form (a field it does
// not set emptied) and its rows, Live left as it was.
// An entry of another session (the one before this sign-in) is not run: its
// address becomes this session's search, and Back goes on past it.
function searchChanged() {
  if (!token()) return;
  if (history.state?.session !== sessionMark()) {
    ownEntry(`${location.pathname}${ownSearch}${location.hash}`);  // a view's link: the same
    return;
  }
  ownSearch = location.search;
  if (!state.started || location.search === state.search) return;
  const live = $("#live").checked;
  $("#filters").reset();
  $("#live").checked = live;
  urlToForm(new URLSearchParams(location.search));
  reload();
}

// A count the API refused (the one at a time a tenant runs, a count past its
// time): said where the search's errors are, with when to count again (`api`).
function chartRefused(error) {
  if (error.status === 401) return signOut(error);
  const said = error.message.replace(/[.\s]+$/, "");
  $("#error").textContent = `The activity chart could not be counted: ${said}.`;
}

// --- the action field's suggestions ----------------------------------------------

// The range the suggestions were counted for (its URL parameters), "" for none.
let suggestedFor = "";
const SUGGESTED = 100;
// The records of reads the console itself causes by being looked at (its
// searches and counts, Live, exports, proofs, the token list): the tenant's
// actions too, and suggested (they are searched for), but after those of the
// tenant's services, which they outnumbered a page load or two in.
const OWN_READS = new Set(["audit_log.queried", "audit_log.streamed", "audit_log.exported",
  "audit_log.verified", "api_token.listed"]);

// Fills the action field's list with the tenant's actions in the range shown,
// the most frequent first: one count (recorded as a search is) when the field is
// first used under a range, not one per search applied.
async function suggestActions() {
  const url = new URLSearchParams(location.search);
  const range = ["range", "from", "to"].map((name) => url.get(name) || "").join(" ");
  if (!state.started || suggestedFor === range) return;
  suggestedFor = range;
  const params = new URLSearchParams();
  for (const name of ["occurred_after", "occurred_before"]) {
    if (state.filter.get(name)) params.set(name, state.filter.get(name));
  }
  params.set("group_by", "action");
  params.set("limit", String(SUGGESTED));
  try {
    const answer = await inTurn(async () => (await api("/api/counts", params)).json());
    // What each means, beside it; without the catalogue (refused: asked again
    // at the next need), the actions all the same.
    const meaning = await actionDescriptions().catch((error) => {
      if (error.status === 401 || error.signedOut) throw error;
      return new Map();
    });
    if (suggestedFor !== range) return;  // signed out, or another range meanwhile
    const groups = answer.groups.filter(({ key }) => key);
    const ranked = [...groups.filter(({ key }) => !OWN_READS.has(key)),
      ...groups.filter(({ key }) => OWN_READS.has(key))];  // each part most frequent first
    $("#action-suggestions").replaceChildren(...ranked.map(({ key, count: n }) => {
      const option = document.createElement("option");
      option.value = key;  // an action as the search takes it; text only
      const counted = OWN_READS.has(key) ? `${count(n, "event")} (the log's own reads)` : count(n, "event");
      option.label = meaning.has(key) ? `${counted}: ${visibleName(meaning.get(key))}` : counted;
      return option;
    }));
  } catch (error) {
    if (suggestedFor === range) suggestedFor = "";  // asked again at the next use
    if (error.status === 401) signOut(error);
  }
}

function forgetSuggestions() {
  suggestedFor = "";
  $("#action-suggestions").replaceChildren();
  clearTimeout(actorPause);
  actorsAsked = "";
  $("#actor-suggestions").replaceChildren();
}

// --- the action catalogue ----------------------------------------------------------

// What the tenant's admins say each action means (ListActionCatalog), for an
// event's detail and the action field's suggestions: read once a session, when
// first needed, and kept for the page. Each listing is recorded as a read of the
// log (`audit_log.queried`, its first page alone): one per event opened would
// have filled the log with the page's own reads. The Actions view's listing
// (admin.js) and its edits update it. Read page after page (the API's most in
// one answer, 1,000), at most CATALOGUE_PAGES of them: past them (by name), an
// action is shown without its description.
const CATALOGUE_PAGE = 1000;
const CATALOGUE_PAGES = 10;
let catalogue = null;  // Map: action -> description, once read
let cataloguing = null;  // the read on its way

// Every entry of the catalogue up to CATALOGUE_PAGES pages, by action, with
// whether more were left out (`truncated`) and how many there are in all.
async function readCatalogue() {
  const entries = [];
  let pageToken = "";
  for (let pages = 0; pages < CATALOGUE_PAGES; pages += 1) {
    const params = new URLSearchParams({ limit: String(CATALOGUE_PAGE) });
    if (pageToken) params.set("page_token", pageToken);
    const answer = await (await api("/api/actions", params)).json();
    entries.push(...answer.entries);
    pageToken = answer.next_page_token;
    if (!pageToken) return { entries, truncated: false, total_entries: answer.total_entries };
    if (pages + 1 === CATALOGUE_PAGES) {
      return { entries, truncated: true, total_entries: answer.total_entries };
    }
  }
  return { entries, truncated: false, total_entries: entries.length };
}

function actionDescriptions() {
  if (catalogue) return Promise.resolve(catalogue);
  if (!cataloguing) {
    // In turn with the page's counts: the tenant's one count at a time counts it too.
    const reading = inTurn(readCatalogue).then((answer) => {
      const read = descriptionsOf(answer.entries);
      if (cataloguing === reading) catalogue = read;  // else signed out meanwhile
      return read;
    }).finally(() => { if (cataloguing === reading) cataloguing = null; });  // failed: asked again
    cataloguing = reading;
  }
  return cataloguing;
}

function descriptionsOf(entries) {
  return new Map(entries.filter(({ description }) => description)
    .map(({ action, description }) => [action, description]));
}

// The catalogue as the Actions view read it (its listing is a read as the page's is).
function catalogued(entries) {
  catalogue = descriptionsOf(entries);
  cataloguing = null;
}

// One description as an admin's edit left it ("" cleared); the page's other
// actions' as read.
function described(action, description) {
  if (!catalogue) return;  // read at the next need, the edit in it
  if (description) catalogue.set(action, description); else catalogue.delete(action);
}

function forgetCatalogue() {
  catalogue = null;
  cataloguing = null;
}

// Adds the description of the event's action to its detail's fields, once the
// catalogue is read (at once when it was), if it has one.
async function describeAction(list, action) {
  let meaning;
  try {
    meaning = (await actionDescriptions()).get(action);
  } catch (error) {
    if (error.status === 401) signOut(error);  // else shown without it, asked again next time
    return;
  }
  const after = list.querySelector("dd.action");
  if (!meaning || !list.isConnected || !after || list.querySelector("dd.action-description")) return;
  const dt = document.createElement("dt");
  dt.textContent = "action description";
  const dd = document.createElement("dd");
  dd.className = "action-description";
  dd.textContent = visibleName(meaning);  // an admin's words: text only
  after.after(dt, dd);
}

// --- the actor field's suggestions -----------------------------------------------

// The actors whose id or email starts with what is typed in the Actor field
// (`actor_prefix`: ids as typed, emails in any case), the most active in the
// range shown first: one count per pause in typing, not one per key, and none
// for a text and range asked already.
const ACTOR_PAUSE_MS = 300;
const ACTORS_SUGGESTED = 20;
let actorPause = 0;
// The text and range the list was counted for, "" for none.
let actorsAsked = "";

function actorTyped() {
  clearTimeout(actorPause);
  actorPause = setTimeout(suggestActors, ACTOR_PAUSE_MS);
}

async function suggestActors() {
  const typed = $("#filters").elements.actor.value.trim();
  const url = new URLSearchParams(location.search);
  const asked = [typed, ...["range", "from", "to"].map((name) => url.get(name) || "")].join("\n");
  if (!state.started || !typed || actorsAsked === asked) return;
  actorsAsked = asked;
  const params = new URLSearchParams();
  for (const name of ["occurred_after", "occurred_before"]) {
    if (state.filter.get(name)) params.set(name, state.filter.get(name));
  }
  params.set("actor_prefix", typed);
  params.set("group_by", "actor");
  params.set("limit", String(ACTORS_SUGGESTED));
  try {
    const answer = await inTurn(async () => (await api("/api/counts", params)).json());
    if (actorsAsked !== asked) return;  // typed on, signed out, or another range meanwhile
    $("#actor-suggestions").replaceChildren(...answer.groups.filter(({ key }) => key).map(({ key, count: n }) => {
      const option = document.createElement("option");
      option.value = key;  // an actor id, as the Actor field takes it; text only
      option.label = count(n, "event");
      return option;
    }));
  } catch (error) {
    if (actorsAsked === asked) actorsAsked = "";  // asked again at the next pause
    if (error.status === 401) signOut(error);  // else (a text refused) no suggestions
  }
}

// --- a row's detail -------------------------------------------------------------

function toggleDetail(row, opener, event) {
  const open = opener.getAttribute("aria-expanded") === "true";
  if (open) {
    row.nextElementSibling?.remove();
    opener.setAttribute("aria-expanded", "false");
    return;
  }
  opener.setAttribute("aria-expanded", "true");
  const detail = document.createElement("tr");
  detail.className = "detail";
  const td = detail.insertCell();
  td.colSpan = 8;
  const list = fields(event);
  td.append(list, changes(event), proofButton(event), json(event));
  row.after(detail);
  describeAction(list, event.action);
}

function fields(event) {
  const list = document.createElement("dl");
  list.className = "fields";
  const add = (name, value) => {
    if (value === undefined || value === "" || value === null) return null;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = visibleName(text(value));
    list.append(dt, dd);
    return dd;
  };
  add("id", event.id);
  add("seq", event.seq);
  add("occurred at (UTC)", event.occurred_at);
  add("received at (UTC)", event.received_at);
  const action = add("action", event.action);
  if (action) action.className = "action";  // its description goes after it (`describeAction`)
  add("category", label(event.category));
  add("description", event.description);
  for (const [key, value] of Object.entries(event.actor || {})) {
    if (key === "roles") add("actor roles", value)?.replaceChildren(roleList(value));
    else if (key !== "credential") add(`actor ${key}`, key === "type" ? label(value) : value);
  }
  // Which of the actor's keys or tokens: its kind, its id, the secret's last
  // characters as products show them ("...a1b2").
  const credential = event.actor?.credential;
  if (credential) {
    add("credential kind", credential.kind);
    add("credential id", credential.id);
    if (credential.hint) add("credential hint", `...${credential.hint}`);
  }
  for (const [key, value] of Object.entries(event.resource || {})) add(`resource ${key}`, value);
  for (const [key, value] of Object.entries(event.context || {})) {
    if (key === "country_source") add("country located by", COUNTRY_SOURCES[value]);
    else if (key in HTTP_LABELS) add(HTTP_LABELS[key], key === "duration_ms" ? `${value} ms` : value);
    else add(key.replace(/_/g, " "), value);
  }
  if (event.leaf_hash) add("leaf hash", hex(event.leaf_hash));
  return list;
}

// A role the detail quotes (`"bill,ing"`), as `sealtrail query`'s actor cell
// does (sealtrail._cli._ROLE_READ_OTHERWISE): a comma, a quote or bracket, a
// space at an edge, `+3 more`; \p{Nd} is Python's \d.
const ROLE_READ_OTHERWISE = /[,"()]|^\s|\s$|^\+\p{Nd}+ more$/u;

// An actor's roles (`actor.roles`), each an item of its own, in the order
// recorded: joined by commas, one role holding a comma read as two, and an
// edge space was lost; quoted where it would read otherwise even so.
function roleList(roles) {
  const list = document.createElement("ul");
  list.className = "roles";
  for (const role of roles) {
    const item = document.createElement("li");
    const said = text(role);
    item.textContent = visibleName(ROLE_READ_OTHERWISE.test(said) ? JSON.stringify(said) : said);
    list.append(item);
  }
  return list;
}

// The HTTP request an event records (RequestContext, ADR 0136), as named in
// the detail view.
const HTTP_LABELS = {
  http_method: "HTTP method",
  http_route: "HTTP route",
  http_status_code: "HTTP status",
  duration_ms: "duration",
};

// Who located an event's country (RequestContext.country_source); an event
// recorded before it was marked says neither.
const COUNTRY_SOURCES = {
  COUNTRY_SOURCE_CALLER: "the caller",
  COUNTRY_SOURCE_GEOIP: "the server, from the IP address (GeoIP)",
};

function changes(event) {
  const wrapper = document.createElement("div");
  if (!event.changes?.length) return wrapper;
  const table = document.createElement("table");
  table.className = "diff";
  table.createCaption().textContent = "Changes";
  const head = table.createTHead().insertRow();
  for (const name of ["Field", "Before", "After"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = name;
    head.append(th);
  }
  const body = table.createTBody();
  for (const change of event.changes) {
    const row = body.insertRow();
    changedField(cell(row, ""), change.field);
    const before = cell(row, "", "before");
    before.replaceChildren(...("before" in change ? isolatedJson(change.before) : ["—"]));
    const after = cell(row, "", "after");
    after.replaceChildren(...("after" in change ? isolatedJson(change.after) : ["—"]));
  }
  wrapper.append(table);
  return wrapper;
}

// A change's field name in the detail view: a button narrowing the search to
// the events that changed that field (`changed_fields`, as the Breakdown
// panel's values narrow), or text alone for a name the parameter cannot carry:
// its values are separated by commas, and spaces around one are trimmed.
function changedField(td, name) {
  if (typeof name !== "string" || !name || name.includes(",") || name.trim() !== name) {
    td.textContent = visibleName(text(name));
    return;
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "value";
  button.textContent = visibleName(name);
  button.title = `Narrow the search to the events that changed ${visibleName(name)}`;
  button.addEventListener("click", () => narrowBy({ changed_fields: name }));
  td.append(button);
}

function json(event) {
  const pre = document.createElement("pre");
  pre.replaceChildren(...isolatedJson(event));  // each string isolated: see `isolatedJson`
  pre.setAttribute("aria-label", "The event as JSON");
  pre.tabIndex = 0;  // it scrolls: a keyboard must reach it to read what is below
  return pre;
}

// --- inclusion proof, checked here ------------------------------------------------

const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
async function sha256(...parts) {
  const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) { joined.set(part, at); at += part.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
}

// RFC 9162 section 2.1.3.2: the root an inclusion proof leads to.
async function rootFrom(index, size, leaf, proof) {
  let fn = BigInt(index), sn = BigInt(size) - 1n, r = leaf;
  for (const p of proof) {
    if (sn === 0n) return null;
    if ((fn & 1n) === 1n || fn === sn) {
      r = await sha256(Uint8Array.of(1), p, r);
      if ((fn & 1n) === 0n) while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = await sha256(Uint8Array.of(1), r, p);
    }
    fn >>= 1n; sn >>= 1n;
  }
  return sn === 0n ? r : null;
}

// C2SP signed note: the name of the key one of whose lines of `note` verifies
// with it, or "" if none does.
async function signatureChecks(note, keys) {
  const split = note.indexOf("\n\n");
  const body = new TextEncoder().encode(note.slice(0, split + 1));
  for (const line of note.slice(split + 2).split("\n")) {
    const match = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!match) continue;
    const signature = bytes(match[2]);
    for (const key of keys) {
      const [name, , ...rest] = key.text.split("+");  // base64 may hold "+" too
      const encoded = rest.join("+");
      if (name !== match[1]) continue;
      const raw = bytes(encoded);
      const id = (await sha256(new TextEncoder().encode(`${name}\n`), raw)).slice(0, 4);
      if (!equal(id, signature.slice(0, 4))) continue;
      const publicKey = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]);
      if (await crypto.subtle.verify({ name: "Ed25519" }, publicKey, signature.slice(4), body)) return name;
    }
  }
  return "";
}

// An RFC 3339 UTC time with nine fractional digits: the API drops trailing
// zeros (".448Z"), the record keeps six (".448000Z").
function instant(time) {
  const parts = /^(.*?)(?:\.(\d+))?Z$/.exec(time || "");
  return parts ? `${parts[1]}.${(parts[2] || "").padEnd(9, "0")}Z` : time || "";
}

// An API enum name as the record writes it: "OUTCOME_DENIED" -> "denied".
function enumWord(value, prefix) {
  return value && value !== `${prefix}_UNSPECIFIED` ? value.slice(prefix.length + 1).toLowerCase() : "";
}

// JSON with its object keys sorted, to compare values whatever their order.
function stable(value) {
  if (Array.isArray(value)) return `[${value.map(stable).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${stable(value[key])}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

// The fields shown (in the row or its detail) that the proven record does not
// hold as shown: every field of the event, not only those of the row.
function differences(event, record) {
  const same = (shown, proven) => (shown ?? "") === (proven ?? "");
  const fields = {
    id: same(event.id, record.id),
    seq: String(event.seq) === String(record.seq),
    tenant_id: same(event.tenant_id, record.tenant_id),
    occurred_at: instant(event.occurred_at) === instant(record.occurred_at),
    received_at: instant(event.received_at) === instant(record.received_at),
    action: same(event.action, record.action),
    category: same(enumWord(event.category, "CATEGORY"), record.category),
    severity: same(enumWord(event.severity, "SEVERITY"), record.severity),
    outcome: same(enumWord(event.outcome, "OUTCOME"), record.outcome),
    description: same(event.description, record.description),
    "actor.type": same(enumWord(event.actor?.type, "ACTOR_TYPE"), record.actor?.type),
    // In order: the record keeps them as sent, and omits them where none.
    "actor.roles": stable(event.actor?.roles || []) === stable(record.actor?.roles || []),
    idempotency_key: same(event.idempotency_key, record.idempotency_key),
    changes: stable(event.changes || []) === stable(record.changes || []),
    details: stable(event.details || {}) === stable(record.details || {}),
  };
  for (const key of ["id", "email", "display_name"]) fields[`actor.${key}`] = same(event.actor?.[key], record.actor?.[key]);
  for (const key of ["kind", "id", "hint"]) {
    fields[`actor.credential.${key}`] = same(event.actor?.credential?.[key], record.actor?.credential?.[key]);
  }
  for (const key of ["type", "id", "name"]) fields[`resource.${key}`] = same(event.resource?.[key], record.resource?.[key]);
  for (const key of ["ip", "user_agent", "country", "request_id", "trace_id", "span_id",
    "http_method", "http_route", "http_status_code", "duration_ms"]) {
    fields[`context.${key}`] = same(event.context?.[key], record.context?.[key]);
  }
  fields["context.country_source"] =
    (enumWord(event.context?.country_source, "COUNTRY_SOURCE") || "") === (record.context?.country_source || "");
  for (const key of ["token_id", "token_name"]) {
    fields[`recorded_by.${key}`] = same(event.recorded_by?.[key], record.recorded_by?.[key]);
  }
  return Object.entries(fields).filter(([, agrees]) => !agrees).map(([name]) => name);
}

function proofButton(event) {
  const wrapper = document.createElement("p");
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Check inclusion proof";
  const result = document.createElement("span");
  result.setAttribute("role", "status");
  button.addEventListener("click", async (click) => {
    click.stopPropagation();
    result.textContent = " checking…";
    result.className = "";
    try {
      const { proof, keys } = await (await api("/api/proof", new URLSearchParams({ seq: event.seq }))).json();
      const record = bytes(proof.record);
      const leaf = await sha256(Uint8Array.of(0), record);
      const checkpoint = proof.checkpoint;
      // The size and root the signature covers: those of the note itself, not
      // the copies beside it, which a rewritten database could change alone.
      const [originLine, sizeLine, rootLine] = checkpoint.note.split("\n");
      const root = await rootFrom(Number(event.seq) - 1, sizeLine, leaf, (proof.proof || []).map(bytes));
      const ok = equal(leaf, bytes(event.leaf_hash)) && root && equal(root, bytes(rootLine));
      // The row shown is a stored view of the record: it must say what the proven record says.
      const proven = JSON.parse(new TextDecoder().decode(record));
      const differing = differences(event, proven);
      // One key signs every tenant's checkpoints: the note must be of this record's log.
      if (!originLine.endsWith(`/${proven.tenant_id}`)) differing.push("the checkpoint's log");
      let signed = "";
      try { signed = await signatureChecks(checkpoint.note, keys.keys || []); } catch { signed = ""; }
      result.className = ok && signed && !differing.length ? "proof-ok" : "proof-bad";
      result.textContent = differing.length
        ? ` FAILED: the row shown differs from the record the proof covers (${differing.join(", ")})`
        : ok && signed
          ? ` verified: in the log of ${count(sizeLine, "event")} of ${originLine}; its checkpoint is`
            + ` signed by ${signed}, a key this server publishes. Whoever can write its database can`
            + " register a key: only a verifier key you pinned proves it (`sealtrail bundle`, then"
            + " `sealtrail verify --key`; docs/integrity.md)"
          : ok ? " the proof leads to the checkpoint's root, but its signature did not verify here"
            : " FAILED: this event does not lead to the signed root";
    } catch (error) {
      result.className = "proof-bad";
      result.textContent = ` could not check: ${error.message}`;
    }
  });
  wrapper.append(button, result);
  return wrapper;
}

// --- reading NDJSON answers (live updates, exports) ----------------------------

// The parsed NDJSON lines of a response, as they arrive: those of each read together.
// A reader that stops early (an export that failed) lets go of the answer: the
// console then ends its call, which would otherwise wait, unread.
async function* batches(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  try {
    for (;;) {
      let read;
      try {
        read = await reader.read();
      } catch (error) {
        if (error.name === "AbortError") throw error;
        throw unreached("", true);  // cut while it came: the browser said "network error"
      }
      const { value, done } = read;
      if (done) break;
      pending += value;
      const complete = pending.split("\n");
      pending = complete.pop();
      yield complete.filter((line) => line.trim()).map((line) => JSON.parse(line));
    }
    if (pending.trim()) yield [JSON.parse(pending)];
  } finally {
    reader.cancel().catch(() => {});
  }
}

// The parsed NDJSON lines of a response, one at a time.
async function* lines(response) {
  for await (const batch of batches(response)) yield* batch;
}

// --- live -------------------------------------------------------------------

async function startLive() {
  stopLive();
  const controller = new AbortController();
  state.live = controller;
  // The view's own filter, a custom range's end included: an event recorded
  // now is past it, and only one dated inside the window (backdated) belongs.
  const params = new URLSearchParams(state.filter);
  // after_seq=0 would replay the whole log: with nothing shown, start with the next event.
  if (state.newestSeq) params.set("after_seq", String(state.newestSeq));
  try {
    const response = await api("/api/stream", params, { signal: controller.signal });
    for await (const parsed of batches(response)) {
      const cut = parsed.findIndex((line) => line.error);  // the stream was cut short
      const events = cut < 0 ? parsed : parsed.slice(0, cut);  // those before it arrived
      if (events.length) {
        addEvents(events, { atTop: true });  // oldest first, as sent
        addToChart(events);  // the chart follows the table
        addToBreakdown(events);  // and the Breakdown panel, as the chart does
      }
      if (cut >= 0) {
        // Its status cannot change once begun: the line's code says it. The
        // token refused as Live ran (revoked, expired; the identity provider
        // ended the session, rechecked as it streams) is a call's 401: the tab
        // signed out, saying why, never "Live updates stopped" with it kept.
        const line = parsed[cut];
        const status = line.code === "UNAUTHENTICATED" ? 401 : response.status;
        throw refusal(traced(line.error, response), status, line);
      }
    }
  } catch (error) {
    if (error.name === "AbortError" || state.live !== controller) return;
    if (error.status === 401) { signOut(error); return; }
    $("#error").textContent = `Live updates stopped: ${error.message}`;
    $("#live").checked = false;
    state.live = null;
  }
}

function stopLive() {
  state.live?.abort();
  state.live = null;
  state.liveAdded = 0;
  $("#live-status").textContent = "";
}

function liveToggled(event) {
  if (!event.target.checked) return stopLive();
  if (state.loaded) return startLive();
  // The first page is still coming (reload starts Live once it arrives), or it failed: ask again.
  if (!state.loading) reload();
}

// --- export -------------------------------------------------------------------

const EXPORT_TYPES = { csv: "text/csv", ndjson: "application/x-ndjson", json: "application/json" };
let exportWorker = null;  // the promise of export-worker.js running, or of null

// The worker that serves exports as downloads (export-worker.js, ADR 0090),
// once it runs; null where the page may run none (not a secure context).
function downloadWorker() {
  exportWorker ??= startWorker().catch(() => null);
  return exportWorker;
}

async function startWorker() {
  if (!window.isSecureContext || !("serviceWorker" in navigator)) return null;
  const registration = await navigator.serviceWorker.register("/static/export-worker.js");
  const worker = registration.installing ?? registration.waiting ?? registration.active;
  while (worker.state !== "activated") {
    if (worker.state === "redundant") return null;
    await new Promise((changed) => worker.addEventListener("statechange", changed, { once: true }));
  }
  return worker;
}

// Where an export's bytes go as they arrive: a download the browser writes to
// disk as they do, completed by `close`, failed by `abort`. Where the page may
// run no worker, the bytes are kept in this tab's memory and saved at `close`.
async function exportFile(name, type) {
  const worker = await downloadWorker();
  if (!worker) return keptFile(name, type);
  const { readable, writable } = new TransformStream();
  const id = crypto.randomUUID();  // names the stream for the worker: it grants nothing
  // Rejected if the browser stops reading the download (the person cancelled
  // it): a write would wait for good, and the export with it.
  let stop;
  const stopped = new Promise((_, reject) => { stop = reject; });
  stopped.catch(() => {});
  await new Promise((ready) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = ({ data }) => {
      if (data === "ready") ready();
      else stop(new Error("the download was stopped in the browser"));
    };
    worker.postMessage({ id, name, type, stream: readable }, [channel.port2, readable]);
  });
  const frame = document.createElement("iframe");
  frame.hidden = true;
  frame.src = `/static/export-download/${id}`;
  document.body.append(frame);
  // An idle worker is stopped, and the download with it: a message now and then.
  const pings = setInterval(() => worker.postMessage({ ping: true }), 10e3);
  const writer = writable.getWriter();
  const done = () => { clearInterval(pings); setTimeout(() => frame.remove(), 1e3); };
  return {
    async write(chunk) {
      await Promise.race([stopped, (async () => { await writer.ready; await writer.write(chunk); })()]);
    },
    async close() { done(); await writer.close(); },
    abort(error) { done(); writer.abort(error).catch(() => {}); },
  };
}

function keptFile(name, type) {
  const chunks = [];
  return {
    async write(chunk) { chunks.push(chunk); },
    async close() {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob(chunks, { type }));
      link.download = name;
      document.body.append(link);
      link.click();
      link.remove();
    },
    abort() { chunks.length = 0; },
  };
}

async function exportAs(format) {
  const status = $("#status");
  const params = new URLSearchParams(state.filter);  // the rows shown, not a later window
  params.set("format", format);
  let file = null;
  try {
    const response = await api("/api/export", params);
    // NDJSON lines: the file's chunks, then its manifest; or an error that cut it short.
    // The download starts with the first line that is not an error: a refusal starts none.
    const hash = sha256Pieces.create();
    let received = 0;
    for await (const line of lines(response)) {
      if (line.error) {
        // Its status cannot change once begun: the line's code says it, as a
        // Live stream's does. UNAUTHENTICATED (the token revoked or expired as
        // it ran, the identity provider ended the session) is a call's 401,
        // said as the sign-out's reason, in the server's words alone.
        const refused = line.code === "UNAUTHENTICATED";
        const said = refused ? line.error : `${line.error} (cut short after ${count(received, "byte")})`;
        throw refusal(traced(said, response), refused ? 401 : response.status, line);
      }
      file ??= await exportFile(`sealtrail-export.${format}`, EXPORT_TYPES[format]);
      if (line.manifest) {
        const { manifest } = line;
        // Zero fields are left out of the manifest's JSON (an empty NDJSON export).
        if (received !== Number(manifest.byte_count || 0)
          || !equal(hash.digest(), bytes(manifest.sha256 || ""))) {
          throw new Error("the file does not match its manifest (size or SHA-256)");
        }
        await file.close();
        status.textContent = `Exported ${count(manifest.row_count || 0, "event")},`
          + ` ${count(received, "byte")} (${format.toUpperCase()}), checked against its manifest.`;
        return;
      }
      const chunk = bytes(line.chunk);
      hash.update(chunk);
      await file.write(chunk);
      received += chunk.length;
      status.textContent = `Exporting… ${count(received, "byte")}`;
    }
    throw new Error(`cut short after ${count(received, "byte")}`);
  } catch (error) {
    file?.abort(error);  // a download begun fails: never a file that looks complete
    status.textContent = "";
    // Refused 401, at its start or cut partway: the tab signed out saying why,
    // as for any call, never "Export failed" with a token the API refuses kept.
    if (error.status === 401) { signOut(error); return; }
    if (!error.signedOut) $("#error").textContent = `Export failed: ${error.message}`;
  }
}

// --- wiring -------------------------------------------------------------------

// The views of a signed-in tab: the admin links for an admin only.
function showSignedIn() {
  $("#signin").hidden = true;
  $("#signout").hidden = false;
  showPerson();
  $("#views").hidden = false;
  showAdminLinks();
  route();
  if (sessionStorage.getItem(ROLE_KEY) === null) learnRole();
}

// For a tab signed in by an earlier version of the page, which kept no role:
// asked beside the first page of events, not before it.
async function learnRole() {
  try {
    const { role } = await (await api("/api/signin")).json();
    sessionStorage.setItem(ROLE_KEY, role || "");
  } catch (error) {
    if (error.status === 401) signOut(error);
    return;
  }
  showAdminLinks();
  route();
}

function showAdminLinks() {
  const admin = sessionStorage.getItem(ROLE_KEY) === "admin";
  for (const link of document.querySelectorAll("#views a.admin")) link.hidden = !admin;
}

// Shows the view the URL fragment names (#tokens, #sinks, #alerts,
// #retention) to an admin, the events to anyone else or for any other fragment.
function route() {
  if (!token()) return;
  const wanted = ADMIN_VIEWS[location.hash.slice(1)];
  const shown = wanted && sessionStorage.getItem(ROLE_KEY) === "admin" ? wanted : "log";
  hideSecretsOutside(shown);  // shown once: leaving its view takes a secret off the page
  for (const view of document.querySelectorAll("section.view")) view.hidden = view.id !== shown;
  for (const link of document.querySelectorAll("#views a")) {
    if (link.dataset.view === shown) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (shown === "log") {
    // The events are loaded when first shown: a tab opened on an admin view
    // makes no Query (each is recorded) it does not show.
    if (!state.started) {
      state.started = true;
      urlToForm(new URLSearchParams(location.search));
      reload();
    }
  } else {
    showAdminView(shown);
  }
}

function init() {
  nameZone();
  $("#signin").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", () => leave());
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    goTo(formToUrl());
    reload();
  });
  $("#filters").elements.range.addEventListener("change", (event) => {
    $("#filters").classList.toggle("custom-range", event.target.value === "custom");
  });
  $("#clear").addEventListener("click", () => {
    const url = choicesToUrl(new URLSearchParams());  // the filter cleared; the page's choices kept
    goTo(url);
    $("#filters").reset();
    urlToForm(url);
    reload();
  });
  $("#live").addEventListener("change", liveToggled);
  $("#utc").addEventListener("change", timesSwitched);
  $("#more").addEventListener("click", loadPage);
  $("#export-csv").addEventListener("click", () => exportAs("csv"));
  $("#export-ndjson").addEventListener("click", () => exportAs("ndjson"));
  $("#export-json").addEventListener("click", () => exportAs("json"));
  new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting) && state.nextToken) loadPage();
  }).observe($("#more"));
  // A view opened by its link is an entry of its own: this session's.
  window.addEventListener("hashchange", () => {
    // A sign-in's code reached by a fragment's change (the address typed
    // again) rather than a load: taken out of the address as at a load.
    const code = takeSignInCode();
    if (code !== null) { finishSignIn(code); return; }
    if (!history.state) ownEntry();
    route();
  });
  window.addEventListener("popstate", searchChanged);
  setUpAdmin({
    api, signOut, filterFields, fillFilter, filterRow: $("#filters .row"), catalogued, described,
    // In turn with the page's counts, as the suggestions' read is: a listing
    // counts, and a tenant runs one count at a time (a page of the ten read
    // beside the chart's count was refused).
    readCatalogue: () => inTurn(readCatalogue),
  });
  setUpChart({ api, narrow: narrowTo, report: chartRefused });
  setUpBreakdown({ api, narrowBy, inTurn, signOut, keepChoices });
  $("#filters").elements.actions.addEventListener("focus", suggestActions);
  $("#filters").elements.actor.addEventListener("input", actorTyped);
  signInWays = learnSignInWays();
  if (handedCode !== null) { finishSignIn(handedCode); return; }
  if (token() && !sessionMark()) newSession();  // signed in by an earlier version of the page
  if (token()) showSignedIn(); else showSignInForm();
}

init();

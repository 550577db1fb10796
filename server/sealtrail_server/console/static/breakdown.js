// The Breakdown panel under the activity chart: the largest values of one of
// the events' fields (action, actor, actor type, resource type, country, outcome,
// severity, category, HTTP route, HTTP status, credential, IP address,
// resource, recording token) among the events the search's filter and range match,
// each with its count, counted by the API (CountEvents, /api/counts?group_by=):
// one count per panel load, never one per value. A value pressed narrows the
// search to it, as typing it into its filter field and pressing Apply would.
// With a duration chosen (`measure`, none by default), each value also shows
// that figure of its events' request durations in ms (CountEvents' measure:
// "-" where none of them has a duration) and how many of them were measured.
// The grouping and the measure are kept in the page's URL (each list's `name`,
// `breakdown` and `breakdown_measure`; the default left out), as the filter is.

import { count, isolated, isolatedList, visibleName } from "./admin.js";
import { notCounted } from "./chart.js";

const $ = (selector) => document.querySelector(selector);
// The values shown: the largest ten.
const SHOWN = 10;
// Each grouping: the search's parameter its values filter by, whether it takes
// a comma-separated list (`separated`), and its words (`many`: not `one` + s);
// for a key of several parts (a credential's), the parameters it sets
// (`narrow`, as `narrowing` answers) and how it reads (`shown`). `fields`: the parameters of a value
// that is several, keyed by the API as the JSON array of their values (a
// resource: `["repository","acme/web"]`, so that a `/` in either keeps it
// apart), each part named in `parts`.
export const GROUPINGS = {
  action: { field: "actions", one: "action", separated: true },
  actor: { field: "actor", one: "actor" },
  actor_type: { field: "actor_types", one: "actor type", separated: true },
  resource_type: { field: "resource_type", one: "resource type" },
  country: { field: "country", one: "country" },
  outcome: { field: "outcomes", one: "outcome", separated: true },
  severity: { field: "severities", one: "severity", separated: true },
  category: { field: "categories", one: "category", separated: true },
  http_route: { field: "http_routes", one: "HTTP route", separated: true },
  http_status: { field: "http_status_classes", one: "HTTP status", many: "HTTP statuses", separated: true },
  credential: { one: "credential", narrow: credentialNarrowing,
    shown: (key) => credentialWords(credentialOf(key)) },
  ip: { field: "ip", one: "IP address", many: "IP addresses" },
  resource: { fields: ["resource_type", "resource_id"], parts: ["type", "id"], one: "resource" },
  recorded_by: { field: "recorded_by", one: "recording token" },
};

// The measures offered (/api/counts?measure=), each as its column is headed.
const MEASURES = {
  duration_avg: "mean", duration_p50: "p50", duration_p95: "p95", duration_p99: "p99",
  duration_max: "max",
};

// The measures Live's events are measured in, in the page, as the count's
// aggregate (store/counts.py) would take one more duration: the mean again over
// it (a recount's to within a float's rounding), the longest the greater. A
// percentile is not: percentile_cont of a group and one more duration is
// interpolated between the two durations nearest its rank, which the count's
// answer does not hold (only its figure), and asking them again would be a
// read recorded per Live batch.
const ADDED = {
  duration_avg: (value, measured, ms) => value + (ms - value) / (measured + 1),
  duration_max: (value, measured, ms) => Math.max(value, ms),
};

// `value` to a tenth, as `sealtrail stats` prints it (its `tenths`): the number's
// shortest text rounded half away from zero (Intl's halfExpand: 7.25 and 0.15
// are 7.3 and 0.2), in the viewer's locale. toFixed rounds the float's exact
// value (0.15, a hair under, to 0.1).
function tenth(value) {
  return value.toLocaleString(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
}

// The panel's two lists, each keeping its choice in the page's URL by its name.
const choices = () => [$("#breakdown-by"), $("#breakdown-measure")];

// `url` (a search's page parameters) with the panel's choices: each list's
// value under its name, none where it is the list's first (the default).
export function breakdownToUrl(url) {
  for (const list of choices()) {
    if (list.value === list.options[0].value) url.delete(list.name);
    else url.set(list.name, list.value);
  }
  return url;
}

// Chooses in the panel's lists what `url` names: a value a list has no choice
// for (a grouping or measure of another version, a typo) is its default, as
// the count would refuse it.
export function urlToBreakdown(url) {
  for (const list of choices()) {
    const wanted = url.get(list.name);
    list.value = [...list.options].some((option) => option.value === wanted) ? wanted : list.options[0].value;
  }
}

// A credential's key as the API's count writes it: its kind, id and hint as a
// JSON array (`["api_key","key_8f3a2c","a1b2"]`); an id may hold any character.
function credentialOf(key) {
  try {
    const parts = JSON.parse(key);
    if (Array.isArray(parts) && parts.length === 3) return parts.map(String);
  } catch { /* not the API's: shown as it is */ }
  return ["", key, ""];
}

// The search's parameters a credential pressed sets: its kind and id, so that
// another kind's credential of the same id is not found; the hint is no filter.
function credentialNarrowing(key) {
  const [kind, id] = credentialOf(key);
  return kind ? { credential_kind: kind, credential_id: id } : { credential_id: id };
}

// A credential as the rows show it: kind, id and `...hint`.
function credentialWords([kind, id, hint]) {
  return [kind, id, hint && `...${hint}`].filter(Boolean).join(" ");
}


// The console's: its API call, what a value's click does, its one-count-at-a-time
// turn (`inTurn`: a tenant runs one count at a time), what a 401 does, and how
// a choice is kept in the URL (`keepChoices`).
let api = null;
let narrowBy = null;
let inTurn = null;
let signOut = null;
let keepChoices = null;
let counting = null;  // the AbortController of the count under way
let filter = null;  // the view's API filter the panel counts (null: no panel)
// What the panel lists (the count's answer, Live's events added to it), its
// grouping and measure, the newest seq it counts (the answer's `tree_size`,
// then each event Live added), and how many events with a duration Live added
// to a listed value under a percentile (counted, not measured: `ADDED`): null
// while none is listed.
let shown = null;
// The events Live brought while the count was on its way: added once it is
// listed, those it counted (seq up to its tree_size) left out; null when no
// count is on its way (it failed).
let waiting = [];

export function setUpBreakdown(context) {
  ({ api, narrowBy, inTurn, signOut, keepChoices } = context);
  for (const list of choices()) {
    list.addEventListener("change", () => {
      keepChoices();
      if (filter) loadBreakdown(filter);
    });
  }
}

// Takes the panel off the page, and drops a count on its way.
export function clearBreakdown() {
  counting?.abort();
  counting = null;
  filter = null;
  shown = null;
  waiting = [];
  $("#breakdown").hidden = true;
  $("#breakdown tbody").replaceChildren();
  $("#breakdown .summary").textContent = "";
  $("#breakdown .error").textContent = "";
}

// The count the panel makes, as a search announces it (ADR 0137).
export function breakdownCount() {
  const params = new URLSearchParams({ group_by: $("#breakdown-by").value, limit: String(SHOWN) });
  if ($("#breakdown-measure").value) params.set("measure", $("#breakdown-measure").value);
  return params;
}

// Counts the largest values of the chosen field among the events of `view`
// (the view's API filter: the rows' own), in its turn, and lists them.
// `viewId`: the one its search's first page answered, whose record says this
// count; none when the grouping is changed (another look, recorded as its own).
export async function loadBreakdown(view, viewId = "") {
  counting?.abort();
  const controller = new AbortController();
  counting = controller;
  filter = view;
  shown = null;
  waiting = [];
  const grouping = $("#breakdown-by").value;
  const measure = $("#breakdown-measure").value;
  $("#breakdown").hidden = false;
  $("#breakdown").setAttribute("aria-busy", "true");
  $("#breakdown .error").textContent = "";
  try {
    const answer = await inTurn(async () => {
      if (controller.signal.aborted) return null;  // another took its place while it waited
      const params = new URLSearchParams(view);
      params.set("group_by", grouping);
      params.set("limit", String(SHOWN));
      if (measure) params.set("measure", measure);
      if (viewId) params.set("view", viewId);
      return (await api("/api/counts", params, { signal: controller.signal })).json();
    });
    if (counting !== controller || !answer) return;
    shown = {
      grouping, measure, total: Number(answer.total), totalGroups: Number(answer.total_groups),
      truncated: Boolean(answer.truncated), upTo: Number(answer.tree_size), unmeasured: 0,
      groups: answer.groups.map(({ key, count: n, value = null, measured = 0, label = "" }) => (
        { key, count: Number(n), value: value === null ? null : Number(value), measured: Number(measured), label })),
    };
    const arrived = waiting;
    waiting = [];
    addToBreakdown(arrived);  // those Live brought meanwhile, past the count's log
    list();
  } catch (error) {
    if (counting !== controller || error.name === "AbortError" || error.signedOut) return;
    waiting = null;  // nothing listed for Live's events to be added to
    if (error.status === 401) { signOut(error); return; }
    $("#breakdown tbody").replaceChildren();
    $("#breakdown .summary").textContent = "";
    $("#breakdown .error").textContent = `The breakdown could not be counted: ${error.message.replace(/[.\s]+$/, "")}.`;
  } finally {
    if (counting === controller) $("#breakdown").removeAttribute("aria-busy");
  }
}

// An API enum's name as the count keys it: "OUTCOME_DENIED" -> "denied".
function word(value, prefix) {
  return value && value !== `${prefix}_UNSPECIFIED` ? value.slice(prefix.length + 1).toLowerCase() : "";
}

// The key the API's count groups `event` under by `grouping` (store/counts.py).
const KEY_OF = {
  action: (event) => event.action || "",
  actor: (event) => event.actor?.id || "",
  actor_type: (event) => word(event.actor?.type, "ACTOR_TYPE") || "user",  // none recorded: a user
  resource_type: (event) => event.resource?.type || "",
  country: (event) => event.context?.country || "",
  outcome: (event) => word(event.outcome, "OUTCOME"),
  severity: (event) => word(event.severity, "SEVERITY"),
  category: (event) => word(event.category, "CATEGORY"),
  http_route: (event) => event.context?.http_route || "",
  http_status: (event) => (event.context?.http_status_code ? String(event.context.http_status_code) : ""),
  credential: (event) => {
    const credential = event.actor?.credential;
    return credential ? credentialKey([credential.kind || "", credential.id || "", credential.hint || ""]) : "";
  },
  ip: (event) => addressKey(event.context?.ip),
  // JSON.stringify writes a string as RFC 8785 does, as the API's count does.
  resource: ({ resource: { type = "", id = "" } = {} }) =>
    (type || id ? `[${JSON.stringify(type)},${JSON.stringify(id)}]` : ""),
  recorded_by: (event) => event.recorded_by?.token_id || "",
};

// A credential's kind, id and hint as the count keys them: a JSON array,
// each string written as RFC 8785 does, as JSON.stringify does.
function credentialKey(parts) {
  return `[${parts.map((part) => JSON.stringify(part)).join(",")}]`;
}

// Whether `a` sorts after `b` in the database's byte order ("C": UTF-8's,
// which is code point order; UTF-16's `>` is not, past U+FFFF).
function sortsAfter(a, b) {
  const [x, y] = [[...a], [...b]];
  for (let at = 0; at < Math.min(x.length, y.length); at += 1) {
    const difference = x[at].codePointAt(0) - y[at].codePointAt(0);
    if (difference) return difference > 0;
  }
  return x.length > y.length;
}

// The listed group an event keyed `key` counts in, and that group's key once
// it does, where that is not just the group of key `key`: a credential is
// grouped by kind and id, keyed by the greatest hint of its events
// (store/counts.py), so an event of a listed credential with no hint, or
// another, counts in its row, and a greater hint becomes the row's.
const GROUPED = {
  credential: {
    same: (listed, key) => {
      const [one, other] = [credentialOf(listed), credentialOf(key)];
      return one[0] === other[0] && one[1] === other[1];
    },
    merged: (listed, key) => {
      const [kind, id, hint] = credentialOf(listed);
      const added = credentialOf(key)[2];
      return listed && sortsAfter(added, hint) ? credentialKey([kind, id, added]) : listed;
    },
  },
};

// `context.ip` as the count keys it (store/counts.py: host() of the address
// domain/event.py stores): an IPv6 zone id dropped, an IPv4 address mapped into
// IPv6 as the IPv4 one, IPv6 as PostgreSQL writes it (its longest run of two or
// more zero groups, the first of equal ones, as `::`; the last 32 bits of an
// address of the `::/96` block dotted); "" for none. The API validated it.
export function addressKey(recorded) {
  const address = (recorded || "").toLowerCase().replace(/%.*/, "");
  if (!address.includes(":")) return address;
  const words = (part) => (part ? part.split(":") : []).flatMap((group) => (group.includes(".")
    ? group.split(".").reduce((pair, byte, at) => { pair[at >> 1] = (pair[at >> 1] << 8) | Number(byte); return pair; }, [0, 0])
    : [parseInt(group, 16)]));
  const [head, tail] = address.split("::");
  const front = words(head);
  const back = tail === undefined ? [] : words(tail);
  const all = [...front, ...Array(8 - front.length - back.length).fill(0), ...back];
  const dotted = () => [all[6] >> 8, all[6] & 255, all[7] >> 8, all[7] & 255].join(".");
  if (all.slice(0, 5).every((word) => word === 0) && all[5] === 0xffff) return dotted();
  let best = { at: -1, length: 1 };  // a run of one zero is written as 0
  for (let at = 0; at < 8; at += 1) {
    let end = at;
    while (end < 8 && all[end] === 0) end += 1;
    if (end - at > best.length) best = { at, length: end - at };
    at = Math.max(at, end);
  }
  let text = "";
  for (let at = 0; at < 8; at += 1) {
    if (best.at >= 0 && at >= best.at && at < best.at + best.length) {
      if (at === best.at) text += ":";
      continue;
    }
    if (at) text += ":";
    if (at === 6 && best.at === 0 && best.length === 6) return `${text}${dotted()}`;
    text += all[at].toString(16);
  }
  return best.at >= 0 && best.at + best.length === 8 ? `${text}:` : text;
}

// Events Live added to the table (they match the view's filter): each is added
// to its value's count, in the page, as the chart adds them to its bars; a new
// value is listed when the panel lists every value, and only counted in the
// total when it lists the largest only (whether it is among them, only another
// count would know). Recounted, each Live batch would be a recorded read.
export function addToBreakdown(events) {
  if (!filter) return;
  if (!shown) { waiting?.push(...events); return; }
  const added = notCounted(shown, events);
  const { same = (listed, key) => listed === key, merged = (listed) => listed } = GROUPED[shown.grouping] || {};
  const measuring = ADDED[shown.measure];
  for (const event of added) {
    const key = KEY_OF[shown.grouping](event);
    let group = shown.groups.find((listed) => same(listed.key, key));
    if (group) {
      group.count += 1;
      group.key = merged(group.key, key);
    } else if (!shown.truncated) {
      group = { key, count: 1, value: null, measured: 0, label: "" };  // who: the next count's
      shown.groups.push(group);
      shown.totalGroups += 1;
    }
    // Its duration (`context.duration_ms`, absent for none, as the count reads it).
    const ms = event.context?.duration_ms;
    if (!group || !shown.measure || typeof ms !== "number") continue;
    if (!measuring) { shown.unmeasured += 1; continue; }
    group.value = group.measured && group.value !== null ? measuring(group.value, group.measured, ms) : ms;
    group.measured += 1;
  }
  if (!added.length) return;
  shown.groups.sort((a, b) => b.count - a.count);  // stable: ties keep the API's order
  if (shown.groups.length > SHOWN) {
    shown.groups.length = SHOWN;
    shown.truncated = true;
  }
  list();
}

// Whether the search's parameter carries `key` as it is: a comma-separated
// list's values are split at commas and trimmed (console/parameters.py).
function carried(key, separated) {
  return !separated || (!key.includes(",") && key.trim() === key);
}

function list() {
  const { grouping, measure, total, groups, truncated, totalGroups: values, unmeasured } = shown;
  const { one, many } = GROUPINGS[grouping];
  const [figure, measuredHead] = document.querySelectorAll("#breakdown thead th.measure");
  figure.textContent = measure ? `${MEASURES[measure]} duration` : "";
  figure.hidden = measuredHead.hidden = !measure;
  const body = $("#breakdown tbody");
  body.replaceChildren();
  for (const { key, count: n, value: ms, measured, label } of groups) {
    const row = body.insertRow();
    const value = document.createElement("th");
    value.scope = "row";
    const filters = key && narrowing(GROUPINGS[grouping], key);
    if (key && !filters) {
      // No search of the console finds just its events: a list parameter
      // cannot carry it (a route holding a comma, or spaces at an end, which
      // the console's parameters trim), or a part of it is absent. A value only read.
      value.append(...shownKey(GROUPINGS[grouping], key));
      value.title = `No search of the console takes this ${one}: use the API or the CLI`;
    } else if (key) {
      // Text only: a value is what whoever recorded the event sent.
      const button = document.createElement("button");
      button.type = "button";
      button.className = "value";
      button.append(...shownKey(GROUPINGS[grouping], key));
      button.title = `Narrow the search to ${one} ${button.textContent}`;
      button.addEventListener("click", () => narrowBy(filters));
      value.append(button);
    } else {
      // Events without the field: no search finds them by it.
      value.textContent = `(no ${one})`;
    }
    if (label) {
      // Who an actor is, as its latest event counted records it (the API's
      // `label`: "Alice Martin <a@x.io>"), isolated: a right-to-left name
      // took the id into its run.
      const who = document.createElement("span");
      who.className = "label";
      who.append(isolated(label));
      value.append(" ", who);
    }
    row.append(value);
    row.insertCell().textContent = Number(n).toLocaleString();
    row.insertCell().textContent = total ? `${tenth((100 * Number(n)) / total)}%` : "";
    if (measure) {
      // In ms to a tenth, as `sealtrail stats --measure` prints it; "-": no duration to measure.
      row.insertCell().textContent = measured && ms !== null ? `${tenth(ms)} ms` : "-";
      row.insertCell().textContent = Number(measured).toLocaleString();
    }
  }
  const plural = many || (one === "country" ? "countries" : `${one}s`);
  let said = `${count(total, "event")} in all, ${values === 1 ? `1 ${one}` : `${values.toLocaleString()} ${plural}`}`;
  if (truncated) said += `: the ${groups.length} with the most events`;
  if (measure) {
    said += `; ${MEASURES[measure]} duration of the events that have one`;
    // A percentile's: Live's events with a duration are counted, not measured (`ADDED`).
    if (unmeasured) said += ` (${count(unmeasured, "event")} Live added since counted, not measured)`;
  }
  $("#breakdown .summary").textContent = `${said}. A value narrows the search to it.`;
}

// The search's parameters pressing `key` sets, each to its value, or null when
// no filter finds just its events: a list parameter cannot carry it, or a part
// of it is absent (a resource's type without an id: no filter takes "no id", and
// its type alone would find more than it counted).
function narrowing({ field, fields, separated, narrow }, key) {
  if (narrow) return narrow(key);
  if (!fields) return carried(key, separated) ? { [field]: key } : null;
  const values = JSON.parse(key);
  return values.every(Boolean) ? Object.fromEntries(fields.map((name, at) => [name, values[at]])) : null;
}

// The nodes showing `key`: the value as text (as `shown` reads it), its hidden
// characters escaped; a value of several parts each isolated ("repository:
// acme/web"), one absent said ("(no id)").
function shownKey({ fields, parts, shown: shownOf = (key) => key }, key) {
  if (!fields) return [visibleName(shownOf(key))];
  const values = JSON.parse(key);
  return isolatedList(values.map((part, at) => part || `(no ${parts[at]})`), ": ");
}

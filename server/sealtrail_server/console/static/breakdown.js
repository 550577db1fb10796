// The Breakdown panel under the activity chart: the largest values of one of
// the events' fields (action, actor, actor type, resource type, country, outcome,
// severity, category) among the events the search's filter and range match,
// each with its count, counted by the API (CountEvents, /api/counts?group_by=):
// one count per panel load, never one per value. A value pressed narrows the
// search to it, as typing it into its filter field and pressing Apply would.

import { count, visibleName } from "./admin.js";

const $ = (selector) => document.querySelector(selector);
// The values shown: the largest ten.
const SHOWN = 10;
// Each grouping: the search's parameter its values filter by, and its words.
export const GROUPINGS = {
  action: { field: "actions", one: "action" },
  actor: { field: "actor", one: "actor" },
  actor_type: { field: "actor_types", one: "actor type" },
  resource_type: { field: "resource_type", one: "resource type" },
  country: { field: "country", one: "country" },
  outcome: { field: "outcomes", one: "outcome" },
  severity: { field: "severities", one: "severity" },
  category: { field: "categories", one: "category" },
};

// The console's: its API call, what a value's click does, its one-count-at-a-time
// turn (`inTurn`: a tenant runs one count at a time), and what a 401 does.
let api = null;
let narrowBy = null;
let inTurn = null;
let signOut = null;
let counting = null;  // the AbortController of the count under way
let filter = null;  // the view's API filter the panel counts (null: no panel)

export function setUpBreakdown(context) {
  ({ api, narrowBy, inTurn, signOut } = context);
  $("#breakdown-by").addEventListener("change", () => { if (filter) loadBreakdown(filter); });
}

// Takes the panel off the page, and drops a count on its way.
export function clearBreakdown() {
  counting?.abort();
  counting = null;
  filter = null;
  $("#breakdown").hidden = true;
  $("#breakdown tbody").replaceChildren();
  $("#breakdown .summary").textContent = "";
  $("#breakdown .error").textContent = "";
}

// Counts the largest values of the chosen field among the events of `view`
// (the view's API filter: the rows' own), in its turn, and lists them.
export async function loadBreakdown(view) {
  counting?.abort();
  const controller = new AbortController();
  counting = controller;
  filter = view;
  const grouping = $("#breakdown-by").value;
  $("#breakdown").hidden = false;
  $("#breakdown").setAttribute("aria-busy", "true");
  $("#breakdown .error").textContent = "";
  try {
    const answer = await inTurn(async () => {
      if (controller.signal.aborted) return null;  // another took its place while it waited
      const params = new URLSearchParams(view);
      params.set("group_by", grouping);
      params.set("limit", String(SHOWN));
      return (await api("/api/counts", params, { signal: controller.signal })).json();
    });
    if (counting !== controller || !answer) return;
    list(answer, grouping);
  } catch (error) {
    if (counting !== controller || error.name === "AbortError" || error.signedOut) return;
    if (error.status === 401) { signOut(error); return; }
    $("#breakdown tbody").replaceChildren();
    $("#breakdown .summary").textContent = "";
    $("#breakdown .error").textContent = `The breakdown could not be counted: ${error.message.replace(/[.\s]+$/, "")}.`;
  } finally {
    if (counting === controller) $("#breakdown").removeAttribute("aria-busy");
  }
}

function list(answer, grouping) {
  const { field, one } = GROUPINGS[grouping];
  const total = Number(answer.total);
  const body = $("#breakdown tbody");
  body.replaceChildren();
  for (const { key, count: n } of answer.groups) {
    const row = body.insertRow();
    const value = document.createElement("th");
    value.scope = "row";
    if (key) {
      // Text only: a value is what whoever recorded the event sent.
      const button = document.createElement("button");
      button.type = "button";
      button.className = "value";
      button.textContent = visibleName(key);
      button.title = `Narrow the search to ${one} ${visibleName(key)}`;
      button.addEventListener("click", () => narrowBy(field, key));
      value.append(button);
    } else {
      // Events without the field: no search finds them by it.
      value.textContent = `(no ${one})`;
    }
    row.append(value);
    row.insertCell().textContent = Number(n).toLocaleString();
    row.insertCell().textContent = total ? `${((100 * Number(n)) / total).toFixed(1)}%` : "";
  }
  const values = Number(answer.total_groups);
  const plural = one === "country" ? "countries" : `${one}s`;
  let said = `${count(total, "event")} in all, ${values === 1 ? `1 ${one}` : `${values.toLocaleString()} ${plural}`}`;
  if (answer.truncated) said += `: the ${answer.groups.length} with the most events`;
  $("#breakdown .summary").textContent = `${said}. A value narrows the search to it.`;
}

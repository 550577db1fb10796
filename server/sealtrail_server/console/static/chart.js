// The activity chart above the events (ADR 0108): how many events the search's
// filter matches per hour or per day of the viewer's time zone (of UTC with
// "Times in UTC" on), counted by the API (CountEvents, /api/counts). Each bar
// is a button that narrows the search to its period; a visually hidden table
// says what the bars show. Events Live adds to the table are added to their
// bars here, without counting again.

import { count, inUtc } from "./admin.js";

const $ = (selector) => document.querySelector(selector);
const HOUR = 3600e3;
// A range up to this long is counted per hour (at most 73 bars), a longer one per day.
const HOURLY_UP_TO = 3 * 86400e3;
// The most periods one answer holds (the API's largest `limit`), and so the most bars.
const MOST_BARS = 1000;

// The console's: its API call, what a bar's click does, and where an error goes.
let api = null;
let narrow = null;
let report = null;
let counting = null;  // the AbortController of the count under way
let refocus = false;  // a bar was pressed: the next chart's bar takes the focus
// What the chart shows: the events per period (start -> count), the range and
// unit, the total, and the newest seq it counts (the count's `tree_size`, then
// each event Live added): null while there is no chart.
let drawn = null;
// The events Live brought while the count was on its way (null when none is):
// added once it is drawn, those it counted (seq up to its tree_size) left out.
let waiting = null;

export function setUpChart(context) {
  ({ api, narrow, report } = context);
  $("#activity .bars").addEventListener("keydown", moveAlong);
}

// Takes the chart off the page, and drops a count on its way.
export function clearChart() {
  counting?.abort();
  counting = null;
  refocus = false;
  drawn = null;
  waiting = null;
  $("#activity").hidden = true;
  $("#activity .bars").replaceChildren();
  $("#activity tbody").replaceChildren();
}

// Drops the chart's count under way, the chart left as it is: one asked anew
// ("Times in UTC" switched back before it came) takes the tenant's turn and
// records its read alone, not after it.
export function dropCount() {
  counting?.abort();
  counting = null;
}

// The zone the browser shows times in.
function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
}

// The zone the days and hours are counted in: the one the rows' times are said
// in, the browser's, or UTC's ("") with "Times in UTC" on, for bars of the
// rows' days: a UTC day's events fell in two of Kolkata's.
function chartZone() {
  return inUtc() ? "" : browserZone();
}

// Counts the events of `filter` (the view's API filter: the rows' own) per hour
// or day, and draws them; a refusal is reported (the console's error display).
// The count the chart makes of `filter`, as a search announces it (ADR 0137).
export function chartCount(filter) {
  const count = new URLSearchParams({ group_by: rangeOf(filter).unit });
  const zone = chartZone();
  if (zone) count.set("time_zone", zone);
  return count;
}

// `view`: the one its search's first page answered, whose record says this count.
export async function loadChart(filter, view = "") {
  const focus = refocus;  // a bar pressed: the view it narrowed to is the one counted now
  clearChart();
  refocus = focus;
  const controller = new AbortController();
  counting = controller;
  waiting = [];
  const { range, unit } = rangeOf(filter);
  let zone = chartZone();
  try {
    let answer;
    try {
      answer = await counts(filter, unit, zone, controller.signal, view);
    } catch (error) {
      // A zone the database does not know (newer than its copy of the zone data): UTC's.
      if (!zone || !(error.fields || []).some(({ field }) => field === "time_zone")) throw error;
      zone = "";
      answer = await counts(filter, unit, zone, controller.signal);
    }
    if (counting !== controller) return;
    draw(answer, { ...range, unit, zone });
  } catch (error) {
    if (counting !== controller || error.name === "AbortError") return;
    waiting = null;
    report(error);
  }
}

// Events Live added to the table (oldest first, as they came): each is added to
// its period's bar, a new period drawn for one past the chart's ends. Counted
// in the page, not asked again: a count per event would be a recorded read
// each (and Live's own), and one at a time per tenant, refused while one ran.
export function addToChart(events) {
  if (waiting) { waiting.push(...events); return; }
  if (!drawn) return;
  const added = notCounted(drawn, events);
  for (const event of added) {
    // Milliseconds: the API's nanoseconds are no date JavaScript reads everywhere.
    const at = Date.parse(String(event.occurred_at).replace(/(\.\d{3})\d+/, "$1"));
    if (Number.isNaN(at)) continue;
    const { unit, zone } = drawn.range;
    const key = periodOf(at, unit, !zone);
    if (drawn.truncated && key > drawn.last) continue;  // past the bars drawn: in the total only
    drawn.counted.set(key, (drawn.counted.get(key) || 0) + 1);
    // An open range (a preset's, "All time") goes on to now: its last bar with it.
    if (at >= drawn.range.end) drawn.range.end = at + 1;
  }
  if (added.length) render();
}

// The events of a Live batch (oldest first) a count's `shown` has not counted:
// those past its newest seq (`upTo`, the count's tree_size at first), which
// goes on past them, each added to its `total`. The chart's and the
// breakdown's: an event is added to each once.
export function notCounted(shown, events) {
  const added = [];
  for (const event of events) {
    const seq = Number(event.seq);
    if (!(seq > shown.upTo)) continue;  // counted already: the count's log held it
    shown.upTo = seq;
    shown.total += 1;
    added.push(event);
  }
  return added;
}

// A filter that matched nothing is not counted (there is nothing to draw): its
// chart starts empty, drawn once Live adds an event to it.
export function emptyChart(filter) {
  clearChart();
  const { range, unit } = rangeOf(filter);
  const zone = chartZone();
  drawn = { counted: new Map(), range: { ...range, unit, zone }, total: 0, truncated: false, last: 0, upTo: 0 };
}

// The range `filter` covers (its end now, if it has none), and its unit.
function rangeOf(filter) {
  const after = filter.get("occurred_after");
  const before = filter.get("occurred_before");
  const range = { start: after ? Date.parse(after) : null, end: before ? Date.parse(before) : Date.now() };
  const unit = range.start !== null && range.end - range.start <= HOURLY_UP_TO ? "hour" : "day";
  return { range, unit };
}

async function counts(filter, unit, zone, signal, view = "") {
  const params = new URLSearchParams(filter);
  params.set("group_by", unit);
  if (zone) params.set("time_zone", zone);
  if (view) params.set("view", view);
  return (await api("/api/counts", params, { signal })).json();
}

// The start of the hour or day `time` is in, in the browser's zone (or UTC's).
function periodOf(time, unit, utc) {
  const at = new Date(time);
  if (unit === "hour") {
    // The wall clock's minutes: an hour at +05:30 starts at half past a UTC hour.
    const minutes = utc ? at.getUTCMinutes() : at.getMinutes();
    return time - minutes * 60e3 - at.getUTCSeconds() * 1e3 - at.getUTCMilliseconds();
  }
  // A midnight the clocks skip is the first instant of its day, as the API counts it.
  return utc ? Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate())
    : new Date(at.getFullYear(), at.getMonth(), at.getDate()).getTime();
}

// The start of the period after the one that starts at `start`. An hour is an
// hour of time: the hour the clocks go back over comes twice, the one they skip
// never, as the API's buckets do.
function periodAfter(start, unit, utc) {
  if (unit === "hour") return start + HOUR;
  const at = new Date(start);
  return utc ? Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate() + 1)
    : new Date(at.getFullYear(), at.getMonth(), at.getDate() + 1).getTime();
}

// Every period of the range, those without events included (the API answers
// only those with some), each with its count.
function periods({ counted, truncated, last, range: { start, end, unit, zone } }) {
  const utc = !zone;
  const keys = [...counted.keys()].sort((a, b) => a - b);
  if (!keys.length) return [];
  let until = end;
  // Past the API's limit the latest periods were left out: none is drawn as empty.
  if (truncated) until = periodAfter(last, unit, utc);
  const starts = new Set(keys);
  for (let at = periodOf(start ?? keys[0], unit, utc); at < until && starts.size < MOST_BARS;
    at = periodAfter(at, unit, utc)) {
    starts.add(at);
  }
  return [...starts].sort((a, b) => a - b).map((at) => ({
    start: at, end: periodAfter(at, unit, utc), events: counted.get(at) || 0,
  }));
}

function draw(answer, range) {
  const counted = new Map();
  for (const { key, count: n } of answer.groups) counted.set(Date.parse(key), Number(n));
  drawn = {
    counted, range, total: Number(answer.total), truncated: Boolean(answer.truncated),
    last: Math.max(...counted.keys()), upTo: Number(answer.tree_size),
  };
  const arrived = waiting || [];
  waiting = null;
  render();
  addToChart(arrived);  // those Live brought meanwhile, past the count's log
  if (refocus) $("#activity .bars").lastElementChild?.focus();
  refocus = false;
}

// Draws `drawn` anew: the bar with the focus (or the one Tab reaches) keeps it.
function render() {
  const { range, total: all, truncated } = drawn;
  const { unit, zone } = range;
  const shown = periods(drawn);
  if (!shown.length) return;
  const bars = $("#activity .bars");
  const focused = bars.contains(document.activeElement) ? document.activeElement.dataset.start : null;
  const reached = bars.querySelector("[tabindex='0']")?.dataset.start;
  // UTC's periods say so on each bar and row (as the rows' times do), the
  // viewer's are named once, in the title.
  const timeZone = zone ? {} : { timeZone: "UTC", timeZoneName: "short" };
  const words = unit === "hour"
    ? new Intl.DateTimeFormat(undefined, { ...timeZone, month: "short", day: "numeric", hour: "numeric",
      minute: "2-digit" })
    : new Intl.DateTimeFormat(undefined, { ...timeZone, weekday: "short", month: "short", day: "numeric",
      year: "numeric" });
  const name = ({ start, end }) => (unit === "hour" ? words.formatRange(start, end) : words.format(start));
  const most = Math.max(...shown.map((period) => period.events));
  const body = $("#activity tbody");
  bars.replaceChildren();
  body.replaceChildren();
  for (const period of shown) {
    const bar = document.createElement("button");
    bar.type = "button";
    bar.tabIndex = -1;
    bar.dataset.start = String(period.start);
    const said = `${name(period)}: ${count(period.events, "event")}`;
    bar.setAttribute("aria-label", said);
    bar.title = said;
    const fill = document.createElement("span");
    fill.className = period.events ? "bar some" : "bar";
    fill.style.height = `${(100 * period.events) / (most || 1)}%`;  // CSSOM: the policy allows it
    bar.append(fill);
    bar.addEventListener("click", () => {
      // The period within the range shown: the first and last may be part of one.
      narrow(Math.max(period.start, range.start ?? period.start), Math.min(period.end, range.end));
      refocus = true;
    });
    bars.append(bar);
    const row = body.insertRow();
    const header = document.createElement("th");
    header.scope = "row";
    header.textContent = name(period);
    row.append(header);
    row.insertCell().textContent = Number(period.events).toLocaleString();
  }
  // The latest (or the one it was): one Tab stop, the arrows move along.
  const at = (start) => (start ? bars.querySelector(`[data-start="${start}"]`) : null);
  (at(reached) || bars.lastElementChild).tabIndex = 0;
  at(focused)?.focus();
  const per = unit === "hour" ? "hour" : "day";
  const where = zone ? `your time (${zone})` : "UTC";
  let title = `Events per ${per}, ${where}: ${count(all, "event")} in all.`;
  if (truncated) {
    title += ` Showing the first ${count(shown.length, per)}: narrow the time range to see later ones.`;
  }
  $("#activity-title").textContent = `${title} A bar narrows the search to its ${per}.`;
  $("#activity caption").textContent = `Events per ${per}, ${where}; the first and last may count`
    + " part of their period only";
  $("#activity .period").textContent = unit === "hour" ? "Hour" : "Day";
  $("#activity .first").textContent = name(shown[0]);
  $("#activity .most").textContent = `most: ${Number(most).toLocaleString()}`;
  $("#activity .last").textContent = name(shown[shown.length - 1]);
  $("#activity").hidden = false;
}

// Left and Right (Home, End) move along the bars: one Tab stop for them all.
function moveAlong(event) {
  const bars = [...$("#activity .bars").children];
  const at = bars.indexOf(document.activeElement);
  const to = { ArrowLeft: at - 1, ArrowRight: at + 1, Home: 0, End: bars.length - 1 }[event.key];
  if (at < 0 || to === undefined) return;
  event.preventDefault();
  const next = bars[Math.max(0, Math.min(bars.length - 1, to))];
  bars[at].tabIndex = -1;
  next.tabIndex = 0;
  next.focus();
}

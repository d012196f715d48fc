// The dashboard served by `lifeboat serve` at `/`, in Chromium: sign in through the form,
// the sessions list (live), the recovery panel naming a missing asset, Resume (attempt 2,
// checked through the API), the Fresh start and Discard dialogs, bulk actions, a
// keyboard-only walk; a phone's width and dark mode; axe-core, console errors and CSP
// violations on every page; and the same recovery with JavaScript turned off. (The dashboard lives in the Rust binary; its
// browser tests live here because this is the one Node package with Chromium's driver.)

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { screenshotPath, sdkRoot, setup, sleep, waitFor } from "./harness.mjs";

let h;
before(async () => {
  h = await setup({ name: "dashboard" });
});
after(async () => {
  await h?.stop();
});

const api = (method, path, body, headers = {}) =>
  fetch(`${h.lifeboat.url}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${h.adminToken}`, ...headers },
    body,
  }).then(async (r) => ({ status: r.status, body: await r.json().catch(() => null) }));
const json = (value) => [JSON.stringify(value), { "content-type": "application/json" }];

/** Every file under `dir`. */
function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

/** A session that crashed after a checkpoint pinning `take.wav`, whose bytes are then lost on disk. */
async function crashedWithMissingAsset(id) {
  const bytes = Buffer.from(`recording of ${id}`);
  await api("POST", "/sessions", ...json({ id, kind: "recording", title: `Take ${id}`, heartbeat_timeout_ms: 1000 }));
  assert.equal((await api("PUT", `/sessions/${id}/assets/take.wav`, bytes, { "content-type": "application/octet-stream" })).status, 201);
  // Checkpoint 1 needs no file; checkpoint 2 pins the take, whose bytes are then lost, so
  // recovery resumes from checkpoint 1 and names the missing file.
  for (const checkpoint of [
    { attempt: 1, kind: "item", data: { seconds: 6 } },
    { attempt: 1, kind: "item", data: { seconds: 12 }, assets: ["take.wav"] },
  ]) {
    assert.equal((await api("POST", `/sessions/${id}/checkpoints`, ...json(checkpoint))).status, 201);
  }
  const sha = createHash("sha256").update(bytes).digest("hex");
  const blob = files(join(h.tmp, "data")).find((path) => path.includes(sha));
  assert.ok(blob, "the asset's bytes are on disk");
  rmSync(blob);
  await waitFor("the lease to run out", async () => (await api("GET", `/sessions/${id}`)).body.status === "incomplete", { timeoutMs: 10_000 });
}

/** Listens for what must never happen on a page: errors and CSP violations. */
function watch(page) {
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error}`));
  page.on("console", (message) => {
    if (message.type() === "error" || /Content Security Policy/i.test(message.text())) problems.push(`console: ${message.text()}`);
  });
  return problems;
}

/** axe-core's source, evaluated in the page (an injected script tag would be refused by the page's CSP). */
const axeSource = readFileSync(join(sdkRoot, "node_modules", "axe-core", "axe.min.js"), "utf8");

async function axe(page, label) {
  await page.evaluate(axeSource);
  const found = await page.evaluate(async () =>
    (await window.axe.run(document, { resultTypes: ["violations"] })).violations.map((v) => ({ id: v.id, impact: v.impact })),
  );
  const serious = found.filter((v) => v.impact === "serious" || v.impact === "critical");
  console.log(`  axe (${label}): ${found.length} violations, ${serious.length} serious/critical ${serious.length ? JSON.stringify(serious) : ""}`);
  return serious;
}

async function signIn(page) {
  await page.goto(`${h.lifeboat.url}/`);
  await page.fill("#key", h.adminToken);
  await page.click("button[type=submit]");
  await page.waitForURL(/\/sessions/);
}

test("dashboard: sign in, sessions, the recovery panel names the missing asset, Fresh start's dialog cancels on Esc, Resume makes attempt 2", { timeout: 60_000 }, async () => {
  await crashedWithMissingAsset("take-1");
  const browser = await h.launch();
  const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  const page = await context.newPage();
  const problems = watch(page);

  await page.goto(`${h.lifeboat.url}/`);
  assert.deepEqual(await axe(page, "sign in"), []);
  await signIn(page);
  assert.match(await page.textContent("body"), /take-1/);
  assert.deepEqual(await axe(page, "sessions"), []);
  await page.screenshot({ path: screenshotPath("dashboard-sessions"), fullPage: true });

  await page.click("a[href$='sessions/take-1']");
  await page.waitForURL(/sessions\/take-1$/);
  const panel = await page.textContent("section.recovery");
  assert.match(panel, /take\.wav/, "the recovery panel names the missing asset");
  assert.match(panel, /checkpoint 1/, "and resumes from the checkpoint that needs no missing file");
  assert.deepEqual(await axe(page, "session"), []);
  await page.screenshot({ path: screenshotPath("dashboard-recovery-panel"), fullPage: true });

  // Fresh start asks first, in a modal dialog that holds the focus; Esc cancels it and
  // gives the focus back to the button that opened it.
  const opener = page.locator("button[commandfor=fresh-dialog][command=show-modal]");
  await opener.click();
  const dialog = page.locator("#fresh-dialog");
  await dialog.waitFor({ state: "visible" });
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Cancel", "the dialog's safe choice has the focus");
  assert.deepEqual(await axe(page, "fresh start dialog"), []);
  await page.screenshot({ path: screenshotPath("dashboard-dialog") });
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });
  assert.equal(await page.evaluate(() => document.activeElement?.getAttribute("commandfor")), "fresh-dialog", "focus is back on Fresh start…");
  await sleep(300);
  assert.equal((await api("GET", "/sessions/take-1")).body.attempt, 1, "Esc changed nothing");

  await page.click("button:has-text('Resume')");
  await page.waitForURL(/sessions\/take-1$/);
  const resumed = (await api("GET", "/sessions/take-1")).body;
  assert.equal(resumed.attempt, 2);
  assert.equal(resumed.status, "active");
  assert.match(await page.textContent("#attempt"), /^2/);

  assert.deepEqual(problems, [], "no page errors, console errors or CSP violations");
  await context.close();
});

test("dashboard: a phone's width without horizontal scroll, dark mode, and JavaScript off", { timeout: 60_000 }, async () => {
  await crashedWithMissingAsset("take-2");
  const browser = await h.launch();

  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, colorScheme: "dark", javaScriptEnabled: false });
  const page = await phone.newPage();
  const problems = watch(page);
  await signIn(page);
  assert.equal((await api("PUT", "/projects/phone-essay", ...json({ state: { title: "a", body: "b" } }))).status, 201);
  assert.equal((await api("PUT", "/projects/phone-essay", ...json({ state: { title: "a long title that wraps", body: "b" } }))).status, 200);
  const pages = ["/sessions", "/sessions/take-2", "/bulk?action=cancel&id=take-2", "/projects", "/projects/phone-essay", "/projects/phone-essay/diff?from=1&to=2", "/stats"];
  const widths = [];
  for (const path of pages) {
    await page.goto(`${h.lifeboat.url}${path}`);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    widths.push(width);
    assert.ok(width <= 390, `${path}: ${width} px wide at 390`);
  }
  console.log(`  at 390 px with scripts off, page widths: ${widths.join(", ")}`);
  await page.goto(`${h.lifeboat.url}/sessions/take-2`);
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  console.log(`  dark mode background: ${background}`);
  await page.screenshot({ path: screenshotPath("dashboard-phone-dark"), fullPage: true });

  // The dialogs are HTML (invoker commands on <dialog>), so they work with scripts off.
  await page.click("button[commandfor=fresh-dialog]");
  await page.locator("#fresh-dialog").waitFor({ state: "visible" });
  await page.screenshot({ path: screenshotPath("dashboard-phone-dialog") });
  await page.keyboard.press("Escape");
  await page.locator("#fresh-dialog").waitFor({ state: "hidden" });

  // Resume with JavaScript off: a form that posts and redirects.
  await page.click("button:has-text('Resume')");
  await page.waitForURL(/sessions\/take-2$/);
  assert.equal((await api("GET", "/sessions/take-2")).body.attempt, 2);
  assert.deepEqual(problems, []);
  await phone.close();
});

test("dashboard: a project's diff between two revisions, and restore of revision 1 as revision n+1; the stats page", { timeout: 60_000 }, async () => {
  for (const state of [{ a: 1, b: 2, e: 5 }, { a: 9, e: 5, c: { d: true } }, { a: 9, e: 5, c: { d: false } }]) {
    assert.ok([200, 201].includes((await api("PUT", "/projects/essay", ...json({ state }))).status));
  }
  const browser = await h.launch();
  const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  const page = await context.newPage();
  const problems = watch(page);
  await signIn(page);

  await page.goto(`${h.lifeboat.url}/projects/essay/diff?from=1&to=2`);
  const ops = await page.$$eval("table.patch tbody tr", (rows) => rows.map((row) => [...row.cells].slice(0, 2).map((c) => c.textContent.trim()).join(" ")));
  assert.deepEqual(ops.sort(), ["add /c", "remove /b", "replace /a"].sort(), "exactly the changed pointers");
  assert.deepEqual(await axe(page, "diff"), []);
  await page.screenshot({ path: screenshotPath("dashboard-diff"), fullPage: true });

  await page.goto(`${h.lifeboat.url}/projects`);
  assert.deepEqual(await axe(page, "projects"), []);
  await page.goto(`${h.lifeboat.url}/projects/essay`);
  assert.deepEqual(await axe(page, "project"), []);
  const restore = page.locator("form[action$='/restore']").filter({ has: page.locator("input[name=revision][value='1']") });
  await restore.locator("input[name=confirm]").check();
  await restore.locator("button").click();
  await page.waitForURL(/projects\/essay$/);
  const current = (await api("GET", "/projects/essay")).body;
  assert.equal(current.revision, 4);
  assert.deepEqual(current.state, (await api("GET", "/projects/essay?revision=1")).body.state, "revision 4 equals revision 1");

  await page.goto(`${h.lifeboat.url}/stats`);
  assert.equal(await page.locator("svg").count() > 0, true);
  assert.deepEqual(await axe(page, "stats"), []);
  await page.screenshot({ path: screenshotPath("dashboard-stats"), fullPage: true });
  assert.deepEqual(problems, [], "no page errors, console errors or CSP violations");
  await context.close();
});

test("dashboard: the sessions list is live — a session whose lease runs out turns incomplete without a reload; Live off stops updates", { timeout: 60_000 }, async () => {
  const created = await api("POST", "/sessions", ...json({ id: "live-1", kind: "render", heartbeat_timeout_ms: 2000 }));
  assert.equal(created.status, 201);
  assert.equal((await api("POST", "/sessions", ...json({ id: "live-2", kind: "render" }))).status, 201);
  const browser = await h.launch();
  const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  const page = await context.newPage();
  const problems = watch(page);
  await signIn(page);
  const status = (id) => page.locator(`tr[data-session-id='${id}'] [data-field=status]`);
  assert.equal(await status("live-1").textContent(), "active");
  const live = page.locator("#live input[type=checkbox]");
  assert.equal(await live.isChecked(), true, "Live is on by default");

  // live-1 stops heartbeating: its lease runs out and the row changes without a reload.
  const leaseExpires = Date.parse((await api("GET", "/sessions/live-1")).body.lease_expires_at);
  await page.waitForFunction(
    () => document.querySelector("tr[data-session-id='live-1'] [data-field=status]")?.textContent === "incomplete",
    null,
    { polling: "raf", timeout: 15_000 },
  );
  const delay = Date.now() - leaseExpires;
  console.log(`  live update: live-1 shown incomplete ${delay} ms after its lease expired`);
  assert.match(await status("live-1").getAttribute("class"), /\bincomplete\b/);
  assert.notEqual(await page.locator("tr[data-session-id='live-1'] [data-field=crash]").textContent(), "");

  // A session that is not on the page is counted, not drawn.
  const notice = page.locator("#live a");
  assert.equal(await notice.isHidden(), true);
  assert.equal((await api("POST", "/sessions", ...json({ id: "live-3", kind: "render" }))).status, 201);
  await waitFor("the new-changes notice", async () => (await notice.isVisible()) && (await notice.textContent()));
  assert.equal(await notice.textContent(), "1 new change — reload");
  assert.equal(await page.locator("tr[data-session-id='live-3']").count(), 0);

  // Live off: a change is not shown, and off is remembered across a reload.
  await live.uncheck();
  assert.equal((await api("POST", "/sessions/live-2/complete", ...json({}))).status, 200);
  await sleep(1500);
  assert.equal(await status("live-2").textContent(), "active", "no update while Live is off");
  await page.reload();
  assert.equal(await page.locator("#live input[type=checkbox]").isChecked(), false, "off is remembered");
  assert.equal(await status("live-2").textContent(), "completed");
  assert.deepEqual(problems, [], "no page errors, console errors or CSP violations");
  await context.close();
});

/** Failed sessions at attempt 1. */
async function failed(...ids) {
  for (const id of ids) {
    assert.equal((await api("POST", "/sessions", ...json({ id, kind: "batch", title: `Batch ${id}` }))).status, 201);
    assert.equal((await api("POST", `/sessions/${id}/fail`, ...json({ attempt: 1, error: "disk full" }))).status, 200);
  }
}

test("dashboard: bulk Resume acts on exactly the selected sessions, after a review that lists them; Discard's dialog cancels a session", { timeout: 60_000 }, async () => {
  await failed("bulk-1", "bulk-2", "bulk-3");
  const browser = await h.launch();
  const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  const page = await context.newPage();
  const problems = watch(page);
  await signIn(page);
  await page.check("input[form=bulk][value='bulk-1']");
  await page.check("input[form=bulk][value='bulk-3']");
  await page.selectOption("#bulk select[name=action]", "continue");
  await page.click("#bulk button[type=submit]");
  await page.waitForURL(/\/bulk\?/);
  const listed = await page.$$eval("#targets tbody tr", (rows) => rows.map((row) => row.dataset.sessionId));
  assert.deepEqual([...listed].sort(), ["bulk-1", "bulk-3"], "the review lists exactly the selected ids");
  assert.deepEqual(await axe(page, "bulk review"), []);
  await page.screenshot({ path: screenshotPath("dashboard-bulk-review"), fullPage: true });
  for (const id of ["bulk-1", "bulk-2", "bulk-3"]) assert.equal((await api("GET", `/sessions/${id}`)).body.attempt, 1, "reviewing changes nothing");

  await page.click("button:has-text('Resume 2 sessions')");
  await page.waitForSelector("#results");
  const done = await page.$$eval("#results tbody tr", (rows) => rows.map((row) => `${row.dataset.sessionId}: ${row.cells[1].textContent}`));
  assert.deepEqual(done.sort(), ["bulk-1: done", "bulk-3: done"]);
  const attempts = [];
  for (const id of ["bulk-1", "bulk-2", "bulk-3"]) attempts.push((await api("GET", `/sessions/${id}`)).body.attempt);
  assert.deepEqual(attempts, [2, 1, 2], "bulk-1 and bulk-3 resumed, bulk-2 untouched");
  console.log(`  bulk: selected [bulk-1, bulk-3] of 3, reviewed ${JSON.stringify(listed)}, attempts after ${JSON.stringify(attempts)}`);
  assert.deepEqual(await axe(page, "bulk outcome"), []);

  // Discard of the one left, on its page: its dialog, then its confirm button.
  await page.goto(`${h.lifeboat.url}/sessions/bulk-2`);
  await page.click("button[commandfor=discard-dialog]");
  await page.locator("#discard-dialog").waitFor({ state: "visible" });
  assert.equal((await api("GET", "/sessions/bulk-2")).body.status, "failed", "opening the dialog changes nothing");
  await page.locator("#discard-dialog button[type=submit]").click();
  await page.waitForURL(/sessions\/bulk-2$/);
  assert.equal((await api("GET", "/sessions/bulk-2")).body.status, "cancelled", "Discard cancelled it");
  assert.deepEqual(problems, [], "no page errors, console errors or CSP violations");
  await context.close();
});

test("dashboard: keyboard only — sign in, open a session, Fresh start's dialog keeps the focus, Esc, then confirm", { timeout: 60_000 }, async () => {
  await failed("keys-1");
  const browser = await h.launch();
  const context = await browser.newContext({ viewport: { width: 1000, height: 760 }, colorScheme: "dark" });
  const page = await context.newPage();
  const problems = watch(page);
  const focused = () => page.evaluate(() => {
    const e = document.activeElement;
    return e ? `${e.tagName.toLowerCase()}:${(e.getAttribute("href") ?? e.getAttribute("id") ?? e.textContent ?? "").trim()}` : "";
  });
  /** Presses Tab until `wanted(focused)` holds; answers how many presses it took. */
  async function tabTo(label, wanted, max = 60) {
    for (let presses = 1; presses <= max; presses++) {
      await page.keyboard.press("Tab");
      if (wanted(await focused())) return presses;
    }
    throw new Error(`Tab never reached ${label}`);
  }

  await page.goto(`${h.lifeboat.url}/`);
  await tabTo("the key field", (f) => f === "input:key");
  await page.keyboard.type(h.adminToken);
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/sessions$/);
  const toLink = await tabTo("keys-1's link", (f) => f.endsWith("sessions/keys-1"));
  await page.keyboard.press("Enter");
  await page.waitForURL(/sessions\/keys-1$/);
  const toFresh = await tabTo("Fresh start…", (f) => f === "button:Fresh start…");
  await page.keyboard.press("Enter");
  await page.locator("#fresh-dialog").waitFor({ state: "visible" });
  assert.equal(await focused(), "button:Cancel");
  // Tab and Shift+Tab never reach the page behind the modal dialog (it is inert): the
  // focus is in the dialog, or in the browser's own controls (no element of the page).
  const where = [];
  for (const key of ["Tab", "Tab", "Tab", "Tab", "Shift+Tab", "Shift+Tab"]) {
    await page.keyboard.press(key);
    where.push(await page.evaluate(() => {
      const e = document.activeElement;
      return e?.closest("#fresh-dialog") ? `dialog:${e.textContent}` : e === null || e === document.body ? "browser" : `page:${e.textContent}`;
    }));
  }
  console.log(`  keyboard: ${toLink} Tabs to the session, ${toFresh} to Fresh start…; in the dialog: ${where.join(", ")}`);
  assert.deepEqual(where.filter((w) => w.startsWith("page:")), [], "the focus never leaves for the page behind");
  await page.keyboard.press("Escape");
  await page.locator("#fresh-dialog").waitFor({ state: "hidden" });
  assert.equal(await focused(), "button:Fresh start…", "Esc gives the focus back");
  await page.screenshot({ path: screenshotPath("dashboard-session-dark"), fullPage: true });

  await page.keyboard.press("Enter");
  await page.locator("#fresh-dialog").waitFor({ state: "visible" });
  await page.keyboard.press("Tab");
  assert.equal(await focused(), "button:Start fresh");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("#attempt")?.textContent.startsWith("2"), null, { timeout: 10_000 });
  await page.waitForLoadState("load");
  assert.equal((await api("GET", "/sessions/keys-1")).body.attempt, 2, "Start fresh made attempt 2");
  const history = await page.$$eval("#history tbody tr", (rows) => rows.length);
  assert.ok(history >= 3, `the history shows the attempts (${history} changes)`);
  await page.screenshot({ path: screenshotPath("dashboard-session-timeline"), fullPage: true });
  assert.deepEqual(await axe(page, "session after a fresh start"), []);
  assert.deepEqual(problems, [], "no page errors, console errors or CSP violations");
  await context.close();
});

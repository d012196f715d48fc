// Browser end-to-end: the AutoSaver in examples/document.html against a real `lifeboat serve`,
// through a proxy that can cut the network, answer 503, delay, or cut answers; Chromium via
// playwright-core.
//
// 1 typing (300 edits at 20/s) · 2 offline, close, reopen offline, online · 3 close inside the
// debounce window (keepalive) · 4 a 100 KiB edit at close (too big for keepalive) · 5 SIGKILL of
// the browser while blocked · 6 two tabs, the leader closed with a save on the wire · 6b a
// follower tab closed while offline · 7 two browsers: same field (conflict) and different
// fields · 8 SIGKILL of lifeboat serve mid-typing · 8b answers cut after commit · 9 503 with
// Retry-After: 2.
//
// Every scenario prints one line `N name: made=… saved=… lost=… duplicates=…` and asserts
// lost = 0 and duplicates = 0, where:
// - made: the edits the test made; each sets its own top-level key (`e17: 17`, `a3: "…"`) or a
//   field to a value used once, so an edit's effect is visible on its own;
// - saved: the edits whose effect is in the project's final state, read with the admin token
//   straight from Lifeboat (not through the proxy);
// - lost: made − saved;
// - duplicates: (a) revisions whose state equals the previous revision's state — a save that
//   changed nothing, i.e. a patch applied again (every edit here changes the state), plus
//   (b) Idempotency-Keys that got 2xx answers naming different revisions (one save, two
//   revisions), from the proxy's log.
// Every scenario also checks, from the proxy's log, that no two saves (PATCH/PUT) of one
// document were in flight at once.
//
// What headless Chromium cannot show: background-tab timer throttling (pages stay visible),
// and a real power cut (IndexedDB writes are `relaxed`: safe against a process kill).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { overlappingSaves, report, screenshotPath, setup, sleep, waitFor } from "./harness.mjs";

let h;
before(async () => {
  h = await setup({ name: "autosave" });
});
after(async () => {
  await h?.stop();
});

const docPath = (doc) => `/api/v1/projects/${doc}`;
const pageFor = (doc, query = "") => `document.html?doc=${doc}${query ? `&${query}` : ""}`;

/** `count` edits `{prefix+i: i}` from inside the page at `perSecond`, each awaited (in IndexedDB) before the next is due. */
function typeEdits(page, { count, perSecond, prefix = "e", from = 0 }) {
  return page.evaluate(
    async ({ count, perSecond, prefix, from }) => {
      const t0 = performance.now();
      for (let i = from; i < from + count; i++) {
        const due = t0 + ((i - from) * 1000) / perSecond;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((ok) => setTimeout(ok, wait));
        await window.lifeboatTest.patch({ [`${prefix}${i}`]: i });
      }
      return performance.now() - t0;
    },
    { count, perSecond, prefix, from },
  );
}

function expectEdits(count, prefix = "e", from = 0, into = {}) {
  for (let i = from; i < from + count; i++) into[`${prefix}${i}`] = i;
  return into;
}

/** Counts, prints and checks a scenario's line; also (unless `oneBrowser` is false) no overlapping saves for `doc`. */
async function conclude(name, doc, expected, { oneBrowser = true } = {}) {
  const counts = await h.account(doc, expected);
  const line = report(name, counts);
  const overlaps = oneBrowser ? overlappingSaves(h.proxy.log, docPath(doc)) : [];
  if (counts.lost > 0) {
    const missing = Object.keys(expected).filter((k) => JSON.stringify(counts.final[k]) !== JSON.stringify(expected[k]));
    console.log(`  lost keys: ${missing.slice(0, 20).join(", ")}${missing.length > 20 ? ", …" : ""}`);
  }
  if (counts.duplicates > 0) console.log(`  duplicates: ${JSON.stringify(counts.dup)}`);
  assert.equal(overlaps.length, 0, `two saves in flight at once: ${JSON.stringify(overlaps.slice(0, 3))}`);
  assert.equal(counts.lost, 0, line);
  assert.equal(counts.duplicates, 0, line);
  return counts;
}

/** axe-core on the page: its serious and critical violations. */
async function axe(page, label) {
  await page.addScriptTag({ url: "/axe.min.js" });
  const violations = await page.evaluate(async () =>
    (await window.axe.run(document, { resultTypes: ["violations"] })).violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help })),
  );
  console.log(`  axe (${label}): ${violations.length} violations${violations.length ? ` ${JSON.stringify(violations)}` : ""}`);
  return violations.filter((v) => v.impact === "serious" || v.impact === "critical");
}

const saves = (doc) => h.proxy.entries({ path: docPath(doc) }).filter((e) => e.method === "PATCH" || e.method === "PUT");

test("1. 300 edits at 20/s, then saved", { timeout: 60_000 }, async () => {
  const doc = "s1-typing";
  const browser = await h.launch();
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const page = await h.open(context, pageFor(doc));
  const tookMs = await typeEdits(page, { count: 300, perSecond: 20 });
  const during = saves(doc).length;
  const words = { title: "Meeting notes", body: "Three hundred edits in fifteen seconds, then a pause." };
  await page.evaluate((w) => Promise.all([window.lifeboatTest.edit("title", w.title), window.lifeboatTest.edit("body", w.body)]), words);

  // Hold the next save a moment, to see (and photograph) "Saving…".
  h.proxy.delay(1_500);
  await waitFor("Saving…", async () => (await h.status(page)).state === "saving", { timeoutMs: 5_000, everyMs: 20 });
  assert.equal(await h.statusText(page), "Saving…");
  await page.screenshot({ path: screenshotPath("status-saving") });
  h.proxy.delay(0);

  await h.waitSaved(page);
  assert.equal(await h.statusText(page), "Saved");
  await page.screenshot({ path: screenshotPath("status-saved") });
  console.log(`  typed for ${Math.round(tookMs)} ms; ${during} saves while typing, ${saves(doc).length} in all`);
  assert.deepEqual(await axe(page, "document page"), []);
  await conclude("1 300 edits at 20/s", doc, expectEdits(300, "e", 0, { ...words }));
  await context.close();
});

test("2. offline, close the tab, reopen offline (pending shown), online: everything arrives", { timeout: 90_000 }, async () => {
  const doc = "s2-offline";
  const dir = join(h.tmp, "profile-s2");
  const context = await h.launchPersistent(dir);
  let page = await h.open(context, pageFor(doc, "debounce=300"));
  h.proxy.block();
  await typeEdits(page, { count: 20, perSecond: 50 });
  await page.evaluate(() => window.lifeboatTest.edit("title", "Written offline"));
  await waitFor("the page to say offline", async () => (await h.status(page)).state === "offline", { timeoutMs: 15_000, everyMs: 100 });
  const offlineText = await h.statusText(page);
  console.log(`  offline, first tab: "${offlineText}"`);
  assert.match(offlineText, /^Offline — \d+ edits? waiting$/);
  await page.screenshot({ path: screenshotPath("status-offline") });
  await page.close();

  page = await h.open(context, pageFor(doc, "debounce=300"));
  const reopened = await waitFor(
    "the reopened page to show what is pending",
    async () => {
      const s = await h.status(page);
      return s.pending > 0 ? s : false;
    },
    { timeoutMs: 10_000 },
  );
  await waitFor("the reopened page to say offline", async () => (await h.status(page)).state === "offline", { timeoutMs: 15_000, everyMs: 100 });
  const text = await h.statusText(page);
  console.log(`  reopened offline: pending=${reopened.pending} "${text}"`);
  assert.match(text, /Offline — [1-9]\d* edits? waiting/);
  assert.equal((await h.lifeboat.project(doc)).revision, 1, "nothing reached the server while blocked");

  h.proxy.pass();
  const back = Date.now();
  await h.waitSaved(page, "saved after going online", 45_000);
  console.log(`  online → saved in ${Date.now() - back} ms`);
  const expected = expectEdits(20);
  expected.title = "Written offline";
  await conclude("2 offline, close, reopen offline, online", doc, expected);
  await context.close();
});

test("3. close inside the debounce window: keepalive save, nothing pending on reopen, no duplicate", { timeout: 60_000 }, async () => {
  const doc = "s3-close";
  const dir = join(h.tmp, "profile-s3");
  const context = await h.launchPersistent(dir);
  let page = await h.open(context, pageFor(doc, "debounce=2000"));
  await page.evaluate(() => window.lifeboatTest.edit("title", "Closed within 500 ms"));
  const editedAt = performance.now();
  await sleep(200);
  await page.close();
  const closedAt = performance.now();
  assert.ok(closedAt - editedAt < 500, `closed ${Math.round(closedAt - editedAt)} ms after the edit`);

  const arrived = await waitFor("the keepalive save to arrive", () => saves(doc).find((e) => e.status >= 200 && e.status < 300), {
    timeoutMs: 5_000,
  });
  console.log(`  keepalive ${arrived.method} arrived ${Math.round(arrived.start - closedAt)} ms after close: ${arrived.status}, revision ${arrived.revision}`);
  assert.equal((await h.lifeboat.project(doc)).state.title, "Closed within 500 ms");

  const before = saves(doc).length;
  page = await h.open(context, pageFor(doc, "debounce=2000"));
  const openedAt = performance.now();
  const first = await h.status(page);
  const firstText = await h.statusText(page);
  await h.waitSaved(page, "nothing pending after reopen", 10_000);
  const shownMs = Math.round(performance.now() - openedAt);
  console.log(`  reopened: state=${first.state} pending=${first.pending} "${firstText}"; nothing pending after ${first.pending ? shownMs : 0} ms`);
  await sleep(2_500); // a debounce window: anything still queued would be sent now
  const after = saves(doc).slice(before);
  console.log(`  saves after reopen: ${after.map((e) => `${e.method} ${e.status} rev ${e.revision}`).join(", ") || "none"}`);
  assert.equal((await h.status(page)).pending, 0);
  await conclude("3 close within the debounce window", doc, { title: "Closed within 500 ms" });
  // The save landed before the reopen: the reopened page must not show it as waiting.
  assert.equal(first.pending, 0, `the reopened page showed "${firstText}" for an edit the server already had`);
  await context.close();
});

test("4. a 100 KiB edit at close: no keepalive (too big), saved at the next load", { timeout: 60_000 }, async () => {
  const doc = "s4-big";
  const dir = join(h.tmp, "profile-s4");
  const context = await h.launchPersistent(dir);
  let page = await h.open(context, pageFor(doc, "debounce=2000"));
  const big = `${"0123456789abcdef".repeat(6400)}`; // 102,400 bytes
  await page.evaluate((text) => window.lifeboatTest.edit("body", text), big);
  await page.close();
  const closedAt = performance.now();
  await sleep(1_500);
  const sent = saves(doc).filter((e) => e.start >= closedAt - 500);
  console.log(`  saves within 1.5 s of close: ${sent.length}`);
  assert.equal(sent.length, 0, "a body over the keepalive budget is not sent at close");
  assert.equal((await h.lifeboat.project(doc)).revision, 1);

  page = await h.open(context, pageFor(doc, "debounce=2000"));
  await h.waitSaved(page, "saved at the next load", 15_000);
  await conclude("4 100 KiB edit at close", doc, { body: big });
  await context.close();
});

test("5. SIGKILL of the browser with the API blocked, relaunch: saved", { timeout: 60_000 }, async () => {
  const doc = "s5-kill";
  const dir = join(h.tmp, "profile-s5");
  let context = await h.launchPersistent(dir);
  const page = await h.open(context, pageFor(doc, "debounce=300"));
  h.proxy.block();
  await typeEdits(page, { count: 50, perSecond: 50 });
  const status = await h.status(page);
  const pid = await h.killBrowser(dir);
  console.log(`  killed browser pid ${pid} with pending=${status.pending}`);
  h.proxy.pass();
  assert.equal((await h.lifeboat.project(doc)).revision, 1, "nothing reached the server before the kill");

  context = await h.launchPersistent(dir);
  const again = await h.open(context, pageFor(doc, "debounce=300"));
  await h.waitSaved(again, "saved after relaunch", 20_000);
  await conclude("5 browser SIGKILL while blocked", doc, expectEdits(50));
  await context.close();
});

test("6. two tabs, the leader closed midway: the other takes over, one save in flight, nothing lost", { timeout: 90_000 }, async () => {
  const doc = "s6-tabs";
  const dir = join(h.tmp, "profile-s6");
  const context = await h.launchPersistent(dir);
  const first = await h.open(context, pageFor(doc, "debounce=300&maxwait=1000"));
  const second = await h.open(context, pageFor(doc, "debounce=300&maxwait=1000"));
  await waitFor("one leader", async () => {
    const [a, b] = [await h.status(first), await h.status(second)];
    return a.leader !== b.leader;
  });
  const leaderFirst = (await h.status(first)).leader;
  const [leader, follower] = leaderFirst ? [first, second] : [second, first];
  console.log(`  leader: the ${leaderFirst ? "first" : "second"} tab`);

  // Both tabs type (distinct keys), the leader is closed while they do.
  const typingL = typeEdits(leader, { count: 40, perSecond: 20, prefix: "l" });
  const typingF = typeEdits(follower, { count: 80, perSecond: 20, prefix: "f" });
  await typingL;
  // Close the leader while one of its saves is on the wire (held by the proxy, so the page
  // closes before any answer): the request is abandoned, the other tab must send it again.
  h.proxy.delay(1_500);
  const held = await waitFor("a save of the leader on the wire", () => saves(doc).find((e) => e.end === null), { timeoutMs: 5_000, everyMs: 20 });
  await leader.close();
  const closedAt = performance.now();
  h.proxy.delay(0);
  await typingF;
  await waitFor("the other tab to lead", async () => (await h.status(follower)).leader === true, { timeoutMs: 10_000 });
  await h.waitSaved(follower, "saved by the new leader", 20_000);
  const next = saves(doc).find((e) => e.start > closedAt);
  console.log(
    `  the leader closed with ${held.method} (key ${held.idempotencyKey?.slice(0, 13)}…) held: ${held.outcome}; ` +
      `the new leader's first save ${next ? `${Math.round(next.start - closedAt)} ms later, ${next.idempotencyKey === held.idempotencyKey ? "same key" : "another key"}` : "none"}`,
  );
  await conclude("6 two tabs, leader closed", doc, expectEdits(80, "f", 0, expectEdits(40, "l")));
  await context.close();
});

test("6b. a follower tab closed while offline: the leader sends its edits", { timeout: 60_000 }, async () => {
  const doc = "s6b-follower-offline";
  const dir = join(h.tmp, "profile-s6b");
  const context = await h.launchPersistent(dir);
  const first = await h.open(context, pageFor(doc, "debounce=300"));
  const second = await h.open(context, pageFor(doc, "debounce=300"));
  await waitFor("one leader", async () => (await h.status(first)).leader !== (await h.status(second)).leader);
  const [leader, follower] = (await h.status(first)).leader ? [first, second] : [second, first];
  h.proxy.block();
  await typeEdits(follower, { count: 15, perSecond: 30, prefix: "f" });
  await typeEdits(leader, { count: 5, perSecond: 30, prefix: "l" });
  await follower.close();
  await waitFor("the leader to be offline", async () => (await h.status(leader)).state === "offline", { timeoutMs: 15_000, everyMs: 100 });
  const shown = await h.statusText(leader);
  console.log(`  leader, offline after the follower closed: "${shown}"`);
  h.proxy.pass();
  await h.waitSaved(leader, "the leader saved everything", 30_000);
  await conclude("6b follower closed while offline", doc, expectEdits(15, "f", 0, expectEdits(5, "l")));
  await context.close();
});

test("7. two browsers on one document: the same field is a conflict on the page; different fields both kept", { timeout: 90_000 }, async () => {
  const browser = await h.launch();
  const contextA = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const contextB = await browser.newContext({ viewport: { width: 900, height: 640 } });

  // Same field.
  const same = "s7-same-field";
  const a = await h.open(contextA, pageFor(same, "debounce=300"));
  const b = await h.open(contextB, pageFor(same, "debounce=300"));
  await Promise.all([
    a.evaluate(() => window.lifeboatTest.edit("title", "Title from A")),
    b.evaluate(() => window.lifeboatTest.edit("title", "Title from B")),
  ]);
  const conflicted = await waitFor(
    "a conflict on one of the pages",
    async () => {
      for (const [name, page] of [
        ["A", a],
        ["B", b],
      ]) {
        const s = await h.status(page);
        if (s.conflicts.length > 0) return { name, page, status: s };
      }
      return false;
    },
    { timeoutMs: 15_000, everyMs: 100 },
  );
  conflicted.status = await waitFor("the conflicted page to settle", async () => {
    const s = await h.status(conflicted.page);
    return s.state === "conflict" ? s : false;
  });
  const text = await h.statusText(conflicted.page);
  console.log(`  conflict on page ${conflicted.name}: conflicts=${JSON.stringify(conflicted.status.conflicts)} state=${conflicted.status.state} "${text}"`);
  assert.ok(conflicted.status.conflicts.includes("/title"), JSON.stringify(conflicted.status.conflicts));
  assert.match(text, /Conflict on .*\/title/);
  await conflicted.page.screenshot({ path: screenshotPath("status-conflict") });
  await conflicted.page.getByRole("button", { name: "Dismiss the conflict" }).click();
  await waitFor("the conflict dismissed", async () => (await h.status(conflicted.page)).conflicts.length === 0, { timeoutMs: 2_000 });
  await h.waitSaved(a).catch(() => {});
  await h.waitSaved(b).catch(() => {});
  const final = (await h.lifeboat.project(same)).state;
  // One title wins; the other edit is not lost if a page names its field as a conflict
  // (it also stays in the revision history).
  const winner = final.title === "Title from A" ? "A" : final.title === "Title from B" ? "B" : null;
  assert.ok(winner, `the final title is one of the two: ${JSON.stringify(final.title)}`);
  const history = await h.lifeboat.history(same);
  const loser = winner === "A" ? "Title from B" : "Title from A";
  const inHistory = history.some((r) => r.state.title === loser);
  const surfaced = conflicted.status.conflicts.includes("/title") ? 1 : 0;
  console.log(`  final title from ${winner}; the other (${loser}) ${inHistory ? "is in the history" : "never reached the server"}; conflict shown on ${conflicted.name}`);
  const counts = await h.account(same, { title: final.title });
  report("7a same field in two browsers", { made: 2, saved: 1, lost: 2 - 1 - surfaced, duplicates: counts.duplicates });
  assert.equal(surfaced, 1);
  assert.equal(counts.duplicates, 0);
  // (Two browsers cannot coordinate: their saves may overlap; each is fenced by If-Match.)

  // Different fields.
  const diff = "s7-different-fields";
  const a2 = await h.open(contextA, pageFor(diff, "debounce=300"));
  const b2 = await h.open(contextB, pageFor(diff, "debounce=300"));
  await Promise.all([
    a2.evaluate(() => window.lifeboatTest.edit("title", "Title from A")),
    b2.evaluate(() => window.lifeboatTest.edit("body", "Body from B")),
  ]);
  await h.waitSaved(a2);
  await h.waitSaved(b2);
  assert.deepEqual((await h.status(a2)).conflicts, []);
  assert.deepEqual((await h.status(b2)).conflicts, []);
  await conclude("7b different fields in two browsers", diff, { title: "Title from A", body: "Body from B" }, { oneBrowser: false });
  await contextA.close();
  await contextB.close();
});

test("8. SIGKILL of lifeboat serve mid-typing, restart: nothing lost, no duplicate", { timeout: 90_000 }, async () => {
  const doc = "s8-server-kill";
  const browser = await h.launch();
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const page = await h.open(context, pageFor(doc, "debounce=200&maxwait=1000"));
  const typing = typeEdits(page, { count: 160, perSecond: 20 });
  await sleep(2_500);
  const port = h.lifeboat.port;
  await h.lifeboat.kill();
  const killedAt = Date.now();
  await sleep(2_500);
  await h.lifeboat.start();
  assert.equal(h.lifeboat.port, port, "restarted on the same port");
  console.log(`  lifeboat down for ${Date.now() - killedAt} ms`);
  await typing;
  await h.waitSaved(page, "saved after the restart", 45_000);
  const cut = h.proxy.entries({ path: docPath(doc) }).filter((e) => e.outcome === "upstream-error" || e.outcome === "cut").length;
  console.log(`  saves refused by the dead server: ${cut}`);
  await conclude("8 lifeboat SIGKILL mid-typing", doc, expectEdits(160));
  await context.close();
});

test("8b. a save committed but its answer cut: the retry is replayed, not saved twice", { timeout: 60_000 }, async () => {
  const doc = "s8b-answer-cut";
  const browser = await h.launch();
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const page = await h.open(context, pageFor(doc, "debounce=200"));
  h.proxy.cutAnswers(2, { methods: ["PATCH", "PUT"] });
  await typeEdits(page, { count: 10, perSecond: 20 });
  await h.waitSaved(page, "saved after two cut answers", 20_000);
  const attempts = saves(doc);
  console.log(
    `  attempts: ${attempts.map((e) => `${e.outcome === "answer-cut" ? `cut(after ${e.late?.status} rev ${e.late?.revision})` : `${e.status} rev ${e.revision}`} key ${e.idempotencyKey?.slice(-6)}`).join(", ")}`,
  );
  assert.equal(attempts.filter((e) => e.outcome === "answer-cut").length, 2);
  await conclude("8b answers cut after commit", doc, expectEdits(10));
  await context.close();
});

test("9. 503 with Retry-After: 2: the next attempt waits at least 2 s", { timeout: 60_000 }, async () => {
  const doc = "s9-retry-after";
  const browser = await h.launch();
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const page = await h.open(context, pageFor(doc, "debounce=200"));
  h.proxy.fail503(2, 2, { methods: ["PATCH", "PUT"] });
  await page.evaluate(() => window.lifeboatTest.edit("title", "After two 503s"));
  await waitFor("the first 503", () => saves(doc).some((e) => e.status === 503), { timeoutMs: 5_000, everyMs: 20 });
  await sleep(300);
  const waiting = await h.status(page);
  const waitingText = await h.statusText(page);
  console.log(`  during the Retry-After wait: state=${waiting.state} pending=${waiting.pending} "${waitingText}"`);
  await page.screenshot({ path: screenshotPath("status-retrying") });
  await h.waitSaved(page, "saved after the 503s", 20_000);
  const attempts = saves(doc);
  const gaps = [];
  for (let i = 1; i < attempts.length; i++) {
    if (attempts[i - 1].status === 503) gaps.push(Math.round(attempts[i].start - attempts[i - 1].end));
  }
  console.log(`  attempts: ${attempts.map((e) => e.status).join(", ")}; waits after each 503: ${gaps.join(" ms, ")} ms`);
  assert.equal(attempts.filter((e) => e.status === 503).length, 2);
  assert.equal(gaps.length, 2);
  for (const gap of gaps) assert.ok(gap >= 2_000, `waited ${gap} ms after Retry-After: 2`);
  await conclude("9 503 + Retry-After: 2", doc, { title: "After two 503s" });
  await context.close();
});

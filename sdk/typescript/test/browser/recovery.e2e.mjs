// Browser end-to-end: sessions and the `<lifeboat-recovery>` prompt (examples/recorder.html).
//
// 10. A lease lost while offline: the page's recorder session (session token, 2 s lease)
//     checkpoints; the API is unreachable longer than the lease; back online the page sees
//     `leaseLost` exactly once; the prompt (project token) lists the session; Continue makes
//     attempt 2, resuming from the last checkpoint; the old attempt's token is fenced (409).
// 11. The prompt is accessible (axe-core: no serious or critical violation; Tab stays inside;
//     Esc closes and focus returns) and Start fresh asks for confirmation.
//
// Scenario lines: made = checkpoints the page wrote and had acknowledged; saved = those the
// server holds (by their data); lost = made − saved; duplicates = checkpoints whose data
// (a chunk number) is stored twice within one attempt, or a checkpoint written by a fenced attempt.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { bounded, report, screenshotPath, setup, sleep, waitFor } from "./harness.mjs";

let h;
before(async () => {
  h = await setup({ name: "recovery" });
});
after(async () => {
  await h?.stop();
});

/** The focused element's description, looking inside shadow roots. */
const focused = (page) =>
  page.evaluate(() => {
    let el = document.activeElement;
    const path = [];
    while (el) {
      path.push(el.tagName.toLowerCase() + (el.id ? `#${el.id}` : ""));
      if (!el.shadowRoot?.activeElement) break;
      el = el.shadowRoot.activeElement;
    }
    const dialog = el?.closest?.("dialog");
    const all = [...(document.querySelector("lifeboat-recovery")?.shadowRoot?.querySelectorAll("button") ?? [])];
    return {
      index: all.indexOf(el),
      path: path.join(" > "),
      text: el?.textContent ?? "",
      inPrompt: path[0].startsWith("lifeboat-recovery"),
      dialog: dialog?.getAttribute("part") ?? null,
    };
  });

const dialogOpen = (page, part = "dialog") =>
  page.evaluate((part) => document.querySelector("lifeboat-recovery")?.shadowRoot?.querySelector(`dialog[part="${part}"]`)?.open === true, part);

async function axe(page, label) {
  await page.addScriptTag({ url: "/axe.min.js" });
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  const bad = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  console.log(`axe (${label}): ${result.length} violations, ${bad.length} serious/critical${result.length ? ` ${JSON.stringify(result)}` : ""}`);
  return bad;
}

test("10. a lease lost while offline, then Continue from the last checkpoint", { timeout: 60_000 }, async () => {
  const doc = "rec-doc";
  const sid = "rec-doc-take-1";
  const browser = await h.launch();
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await h.open(context, `recorder.html?doc=${doc}&session=${sid}&timeout=2000&tick=0`);

  assert.equal(await page.evaluate(() => window.lifeboatTest.start()), 1);
  const seqs = [];
  for (let i = 0; i < 3; i++) seqs.push(await page.evaluate(() => window.lifeboatTest.checkpoint()));
  assert.deepEqual(seqs, [1, 2, 3]);
  const oldToken = await page.evaluate(() => window.lifeboatTest.tokens[0].token);

  // Offline for longer than the lease: heartbeats fail as network errors, which are no loss.
  h.proxy.block();
  const blockedAt = Date.now();
  await waitFor(
    "the server to record the session incomplete",
    async () => (await h.lifeboat.api("GET", `/sessions/${sid}`)).body.status === "incomplete",
    { timeoutMs: 8_000, everyMs: 200 },
  );
  await sleep(Math.max(0, 3_500 - (Date.now() - blockedAt)));
  assert.equal(await page.evaluate(() => window.lifeboatTest.leaseLost), 0, "no lease loss may be reported while offline");
  h.proxy.pass();

  await waitFor("the page to see leaseLost", () => page.evaluate(() => window.lifeboatTest.leaseLost >= 1), { timeoutMs: 5_000 });
  await sleep(1_500); // more heartbeats would have been due: the loss must be told once
  assert.equal(await page.evaluate(() => window.lifeboatTest.leaseLost), 1, "leaseLost exactly once");
  assert.match(await h.statusText(page), /lost its lease/);
  await page.screenshot({ path: screenshotPath("recorder-lease-lost") });
  const heartbeatsAfterLoss = h.proxy
    .entries({ path: `/api/v1/sessions/${sid}/heartbeat`, method: "POST" })
    .filter((e) => e.status === 409).length;
  assert.equal(heartbeatsAfterLoss, 1, "one refused heartbeat, then silence");
  const crashed = (await h.lifeboat.api("GET", `/sessions/${sid}`)).body;
  console.log(`session after the outage: status=${crashed.status} crash=${crashed.crash?.type} attempt=${crashed.attempt}`);

  // The prompt, with a project token: it lists the document's recoverable sessions.
  await page.evaluate(() => window.lifeboatTest.showRecovery());
  await waitFor("the prompt to open", () => dialogOpen(page), { timeoutMs: 5_000 });
  const items = page.locator("lifeboat-recovery li");
  assert.equal(await items.count(), 1);
  await page.screenshot({ path: screenshotPath("recovery-prompt") });

  await page.locator('lifeboat-recovery li button[part~="continue"]').click();
  await waitFor("lifeboat-recovered", () => page.evaluate(() => window.lifeboatTest.recovered.length === 1), { timeoutMs: 5_000 });
  const recovered = await page.evaluate(() => window.lifeboatTest.recovered[0]);
  assert.deepEqual(recovered, { sessionId: sid, option: "continue", attempt: 2, resumeFromSeq: 3 });
  assert.equal(await dialogOpen(page), false, "the prompt closes when nothing is left");

  // The API agrees: attempt 2, active, resuming from checkpoint 3; the page goes on from chunk 3.
  const session = (await h.lifeboat.api("GET", `/sessions/${sid}`)).body;
  assert.equal(session.attempt, 2);
  assert.equal(session.status, "active");
  assert.equal(session.latest_checkpoint.seq, 3);
  const next = await page.evaluate(() => window.lifeboatTest.checkpoint());
  assert.equal(next, 4);
  const cp4 = (await h.lifeboat.api("GET", `/sessions/${sid}/checkpoints/4`)).body;
  assert.equal(cp4.attempt, 2);
  assert.deepEqual(JSON.parse(JSON.stringify(cp4.data)), { chunk: 4 });

  // A write of the old attempt (its token, its attempt number) is fenced.
  const stale = await page.evaluate(([t]) => window.lifeboatTest.rawCheckpoint(t, 1), [oldToken]);
  assert.equal(stale.status, 409, `old attempt's write: ${JSON.stringify(stale)}`);
  console.log(`old attempt's checkpoint: ${stale.status} ${stale.slug}`);
  await page.screenshot({ path: screenshotPath("recorder-resumed") });

  // Accounting over checkpoints.
  const list = (await h.lifeboat.api("GET", `/sessions/${sid}/checkpoints?limit=1000`)).body.items;
  const chunks = list.map((c) => `${c.attempt}:${c.data?.chunk}`);
  const made = 4;
  const saved = [1, 2, 3, 4].filter((chunk) => list.some((c) => c.data?.chunk === chunk)).length;
  const duplicates = chunks.length - new Set(chunks).size + list.filter((c) => c.data?.stale).length;
  report("10 lease lost offline → Continue", { made, saved, lost: made - saved, duplicates });
  assert.equal(made - saved, 0);
  assert.equal(duplicates, 0);
  await page.evaluate(() => window.lifeboatTest.handle.complete());
  await context.close();
});

test("11. the recovery prompt: axe, keyboard, Esc, Start fresh asks first", { timeout: 60_000 }, async () => {
  const doc = "a11y-doc";
  // Two crashed sessions of the document (made by the app's backend, failed at once).
  for (const [sid, title] of [
    ["a11y-render", "Render of chapter 3"],
    ["a11y-voice", "Voice-over take 2"],
  ]) {
    const created = await h.lifeboat.api("POST", "/sessions", { id: sid, kind: "recording", title, project_id: doc, heartbeat_timeout_ms: 30_000 });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    await h.lifeboat.api("PUT", `/projects/${doc}`, { state: {} }, { "if-none-match": "*" });
    const cp = await h.lifeboat.api("POST", `/sessions/${sid}/checkpoints`, { attempt: 1, kind: "stage", stage: "intro", data: { chunk: 7 } });
    assert.equal(cp.status, 201, JSON.stringify(cp.body));
    const failed = await h.lifeboat.api("POST", `/sessions/${sid}/fail`, { attempt: 1, error: "connection reset by peer" });
    assert.equal(failed.status, 200, JSON.stringify(failed.body));
  }
  const browser = await h.launch();
  const context = await browser.newContext({ viewport: { width: 900, height: 760 } });
  const page = await h.open(context, `recorder.html?doc=${doc}&tick=0`);

  // Open from the keyboard: focus the page's button, press Enter.
  await page.focus("#recover");
  await page.keyboard.press("Enter");
  await waitFor("the prompt to open", () => dialogOpen(page), { timeoutMs: 5_000 });
  assert.equal(await page.locator("lifeboat-recovery li").count(), 2);
  const start = await focused(page);
  assert.ok(start.inPrompt, `focus moves into the prompt (${start.path})`);

  assert.deepEqual(await axe(page, "prompt open"), []);

  // Tab and Shift+Tab stay inside.
  const buttons = await page.locator('lifeboat-recovery dialog[part="dialog"] > ul button, lifeboat-recovery dialog[part="dialog"] > div button').count();
  const seen = new Set();
  for (let i = 0; i < buttons + 2; i++) {
    await page.keyboard.press("Tab");
    const f = await focused(page);
    assert.ok(f.inPrompt && f.dialog === "dialog", `Tab ${i + 1} left the prompt: ${f.path}`);
    seen.add(f.index);
  }
  for (let i = 0; i < buttons + 2; i++) {
    await page.keyboard.press("Shift+Tab");
    const f = await focused(page);
    assert.ok(f.inPrompt && f.dialog === "dialog", `Shift+Tab ${i + 1} left the prompt: ${f.path}`);
  }
  console.log(`keyboard: ${buttons} buttons, Tab reached ${seen.size} of them`);
  assert.equal(seen.size, buttons, "Tab reaches every button");

  // Esc closes; focus returns to the button that opened it.
  await page.keyboard.press("Escape");
  await waitFor("the prompt to close on Esc", async () => !(await dialogOpen(page)), { timeoutMs: 2_000 });
  assert.equal((await focused(page)).path, "button#recover", "focus returns to the opener");

  // Start fresh asks first; Cancel changes nothing; Esc on the question closes only the question.
  await page.keyboard.press("Enter");
  await waitFor("the prompt to open again", () => dialogOpen(page), { timeoutMs: 5_000 });
  const item = page.locator("lifeboat-recovery li").filter({ hasText: "Voice-over take 2" });
  await item.locator('button[part~="fresh-start"]').click();
  await waitFor("the confirmation", () => dialogOpen(page, "confirm"), { timeoutMs: 2_000 });
  const question = await page.locator('lifeboat-recovery [part="question"]').innerText();
  console.log(`Start fresh asks: ${question}`);
  assert.match(question, /Voice-over take 2/);
  assert.ok((await focused(page)).dialog === "confirm", "focus is in the question");
  await page.screenshot({ path: screenshotPath("recovery-confirm-fresh-start") });
  assert.deepEqual(await axe(page, "confirmation open"), []);
  for (let i = 0; i < 3; i++) {
    await page.keyboard.press("Tab");
    assert.equal((await focused(page)).dialog, "confirm", "Tab stays in the question");
  }
  await page.keyboard.press("Escape");
  await waitFor("the question to close", async () => !(await dialogOpen(page, "confirm")), { timeoutMs: 2_000 });
  assert.equal(await dialogOpen(page), true, "Esc on the question leaves the prompt open");
  assert.equal((await h.lifeboat.api("GET", "/sessions/a11y-voice")).body.status, "failed", "nothing happened yet");

  await item.locator('button[part~="fresh-start"]').click();
  await waitFor("the confirmation", () => dialogOpen(page, "confirm"), { timeoutMs: 2_000 });
  await page.locator('lifeboat-recovery button[part~="confirm-cancel"]').click();
  assert.equal((await h.lifeboat.api("GET", "/sessions/a11y-voice")).body.status, "failed", "Cancel changes nothing");

  await item.locator('button[part~="fresh-start"]').click();
  await waitFor("the confirmation", () => dialogOpen(page, "confirm"), { timeoutMs: 2_000 });
  await page.locator('lifeboat-recovery button[part~="confirm-yes"]').click();
  await waitFor("lifeboat-recovered", () => page.evaluate(() => window.lifeboatTest.recovered.length === 1), { timeoutMs: 5_000 });
  const recovered = await page.evaluate(() => window.lifeboatTest.recovered[0]);
  assert.deepEqual(recovered, { sessionId: "a11y-voice", option: "fresh_start", attempt: 2, resumeFromSeq: null });
  const session = (await h.lifeboat.api("GET", "/sessions/a11y-voice")).body;
  assert.equal(session.attempt, 2);
  assert.equal(session.status, "active");
  const other = (await h.lifeboat.api("GET", "/sessions/a11y-render")).body;
  // made: recoveries asked for (one confirmed Start fresh); saved: the server made it; duplicates: attempts beyond it.
  const counts = { made: 1, saved: session.attempt >= 2 ? 1 : 0, duplicates: Math.max(0, session.attempt - 2) + (other.attempt - 1) };
  report("11 recovery prompt (Start fresh, confirmed)", { ...counts, lost: counts.made - counts.saved });
  assert.equal(counts.duplicates, 0);
  assert.equal(await page.locator("lifeboat-recovery li").count(), 1, "the other session is still offered");
  assert.equal(await dialogOpen(page), true);
  await page.screenshot({ path: screenshotPath("recovery-after-fresh-start") });

  // Discard names the attempt the prompt listed: another worker recovered the session
  // meanwhile (attempt 2, active), so the click is refused (409) and that worker keeps it.
  const taken = await h.lifeboat.api("POST", "/sessions/a11y-render/recover", { option: "continue" });
  assert.equal(taken.status, 200, JSON.stringify(taken.body));
  const render = page.locator("lifeboat-recovery li").filter({ hasText: "Render of chapter 3" });
  await render.locator('button[part~="discard"]').click();
  await waitFor("the confirmation", () => dialogOpen(page, "confirm"), { timeoutMs: 2_000 });
  const cancel = page.waitForRequest((r) => r.url().endsWith("/sessions/a11y-render/cancel"));
  await page.locator('lifeboat-recovery button[part~="confirm-yes"]').click();
  assert.deepEqual((await cancel).postDataJSON(), { attempt: 1 });
  await waitFor("the refusal shown", async () => /Something went wrong/.test(await page.locator('lifeboat-recovery [part="error"]').innerText()), { timeoutMs: 5_000 });
  const kept = (await h.lifeboat.api("GET", "/sessions/a11y-render")).body;
  assert.deepEqual([kept.status, kept.attempt], ["active", 2], "the live attempt is not cancelled");
  await bounded("closing the context", context.close(), 10_000);
});

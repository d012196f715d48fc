/**
 * Unit tests of recovery: the API calls and their query strings against a fake server, and
 * the recovery prompt's pure helpers (wording, which buttons show). The element's rendering
 * is tested in Chromium by the browser tests; here we check that importing it is harmless.
 */

import { describe, expect, it } from "vitest";

import { discard, getRecovery, listRecoverable, recover } from "../src/index.js";
import {
  actionsFor,
  assessmentLine,
  confidenceText,
  confirmQuestion,
  crashText,
  missingText,
  savedLine,
  timeAgo,
  titleOf,
  workLostText,
} from "../src/recovery-text.js";
import { fakeServer, recoveryBody, sessionBody } from "./session-fakes.js";

const NOW = Date.parse("2026-12-01T12:00:00.000Z");
const ago = (ms: number) => new Date(NOW - ms).toISOString();

describe("recovery API", () => {
  // The list's filters become query parameters, encoded; with none there is no query at all.
  it("listRecoverable sends project_id, limit and cursor", async () => {
    const server = fakeServer(() => ({ status: 200, body: { items: [], next_cursor: null } }));
    await listRecoverable(server.client);
    await listRecoverable(server.client, { projectId: "essay 1", limit: 20, cursor: "c/2" });
    expect(server.seen.map((r) => `${r.method} ${r.path}?${r.query}`)).toEqual([
      "GET /recovery?",
      "GET /recovery?project_id=essay+1&limit=20&cursor=c%2F2",
    ]);
  });

  // One session's assessment, with its options.
  it("getRecovery reads /sessions/{id}/recovery", async () => {
    const options = [{ option: "continue", requires_confirmation: false }];
    const server = fakeServer(() => ({ status: 200, body: recoveryBody({ options }) }));
    const assessment = await getRecovery(server.client, "job 1");
    expect(server.seen[0]?.path).toBe("/sessions/job%201/recovery");
    expect(assessment.options).toEqual(options);
  });

  // `confirm` is sent only when asked for; every recovery carries an Idempotency-Key.
  it("recover posts the option, and confirm only when given", async () => {
    const server = fakeServer(() => ({ status: 200, body: { session: sessionBody({ attempt: 2 }), resume_from: null } }));
    const recovered = await recover(server.client, "job-1", "restart_batch");
    await recover(server.client, "job-1", "fresh_start", { confirm: true });
    expect(recovered.session.attempt).toBe(2);
    expect(server.seen.map((r) => [r.method, r.path, r.json])).toEqual([
      ["POST", "/sessions/job-1/recover", { option: "restart_batch" }],
      ["POST", "/sessions/job-1/recover", { option: "fresh_start", confirm: true }],
    ]);
    expect(server.seen.every((r) => r.headers.get("idempotency-key"))).toBe(true);
  });

  // Discard is cancel of the attempt the prompt listed (a session recovered since by
  // another worker answers 409 rather than losing its live attempt); without one, an
  // operator's cancel.
  it("discard posts /sessions/{id}/cancel with the attempt listed, or {} without one", async () => {
    const server = fakeServer(() => ({ status: 200, body: sessionBody({ status: "cancelled" }) }));
    const session = await discard(server.client, "job-1", 3);
    expect(session.status).toBe("cancelled");
    await discard(server.client, "job-1");
    expect(server.seen.map((r) => [r.method, r.path, r.json])).toEqual([
      ["POST", "/sessions/job-1/cancel", { attempt: 3 }],
      ["POST", "/sessions/job-1/cancel", {}],
    ]);
  });
});

describe("which buttons show", () => {
  const option = (name: string, requires = false) => ({ option: name, requires_confirmation: requires });
  const summary = (item: Parameters<typeof actionsFor>[0]) => actionsFor(item).map((a) => `${a.label}${a.confirm ? "?" : ""}`);

  // All three options offered: each gets its button, in the server's order; Start fresh and Discard ask first.
  it("every offered option, then Discard", () => {
    const item = { can_recover: true, options: [option("continue"), option("restart_batch"), option("fresh_start", true)] };
    expect(summary(item)).toEqual(["Continue", "Restart batch", "Start fresh?", "Discard?"]);
  });

  // No batch or stage checkpoint: no Restart batch.
  it("Restart batch only when offered", () => {
    const item = { can_recover: true, options: [option("continue"), option("fresh_start", true)] };
    expect(summary(item)).toEqual(["Continue", "Start fresh?", "Discard?"]);
  });

  // Past max_attempts the server asks for confirmation of every option; so does the prompt.
  it("an option that requires confirmation asks first", () => {
    const item = { can_recover: true, options: [option("continue", true), option("fresh_start", true)] };
    expect(summary(item)).toEqual(["Continue?", "Start fresh?", "Discard?"]);
    // Start fresh asks even if a server forgot to say so.
    expect(summary({ can_recover: true, options: [option("fresh_start")] })).toEqual(["Start fresh?", "Discard?"]);
  });

  // An option this prompt does not know is left out rather than shown with a made-up label.
  it("unknown options are left out", () => {
    expect(summary({ can_recover: true, options: [option("rewind"), option("continue")] })).toEqual(["Continue", "Discard?"]);
  });

  // A list item (no options): Continue when something can be resumed, Start fresh always.
  it("without options, from can_recover", () => {
    expect(summary({ can_recover: true })).toEqual(["Continue", "Start fresh?", "Discard?"]);
    expect(summary({ can_recover: false, options: null })).toEqual(["Start fresh?", "Discard?"]);
  });

  it("confirm questions name the session", () => {
    expect(confirmQuestion("discard", "Essay")).toBe("Discard “Essay”? It cannot be recovered afterwards.");
    expect(confirmQuestion("fresh_start", "Essay")).toBe("Start “Essay” fresh? Its saved progress will not be used.");
    expect(confirmQuestion("continue", "Essay")).toBe("“Essay” has been recovered many times already. Continue anyway?");
  });
});

describe("wording", () => {
  it("timeAgo", () => {
    expect(timeAgo(ago(0), NOW)).toBe("just now");
    expect(timeAgo(ago(44_000), NOW)).toBe("just now");
    expect(timeAgo(ago(60_000), NOW)).toBe("1 minute ago");
    expect(timeAgo(ago(5 * 60_000), NOW)).toBe("5 minutes ago");
    expect(timeAgo(ago(60 * 60_000), NOW)).toBe("1 hour ago");
    expect(timeAgo(ago(5 * 3_600_000), NOW)).toBe("5 hours ago");
    expect(timeAgo(ago(30 * 3_600_000), NOW)).toBe("1 day ago");
    expect(timeAgo(ago(3 * 86_400_000), NOW)).toBe("3 days ago");
    // A clock a little behind the server's is not "in the future".
    expect(timeAgo(ago(-5_000), NOW)).toBe("just now");
    expect(timeAgo("not a time", NOW)).toBe("");
  });

  it("workLostText", () => {
    expect(workLostText(0)).toBe("none");
    expect(workLostText(30_000)).toBe("less than a minute of work");
    expect(workLostText(3 * 60_000)).toBe("about 3 min of work");
    expect(workLostText(59 * 60_000)).toBe("about 59 min of work");
    expect(workLostText(60 * 60_000)).toBe("about 1 h of work");
    expect(workLostText(100 * 60_000)).toBe("about 2 h of work");
    expect(workLostText(3 * 86_400_000)).toBe("about 3 days of work");
  });

  it("confidenceText", () => {
    expect(confidenceText(1)).toBe("high (100%)");
    expect(confidenceText(0.92)).toBe("high (92%)");
    expect(confidenceText(0.6)).toBe("medium (60%)");
    expect(confidenceText(0.25)).toBe("low (25%)");
    expect(confidenceText(0)).toBe("none (0%)");
  });

  it("crash types, titles and lines", () => {
    const item = recoveryBody({
      crash: { type: "network", detected_at: ago(0) },
      last_saved_at: ago(3 * 60_000),
      confidence: 0.4,
      work_lost_ms: 15_000,
    }) as unknown as Parameters<typeof savedLine>[0] & Parameters<typeof assessmentLine>[0];
    expect(savedLine(item, NOW)).toBe("Last saved 3 minutes ago · The connection was lost");
    expect(assessmentLine(item)).toBe("Confidence: low (40%) · Work lost: less than a minute of work");
    const paused = { crash: null, session: sessionBody({ status: "paused" }) } as unknown as Parameters<typeof crashText>[0];
    expect(crashText(paused)).toBe("Paused");
    expect(savedLine({ ...paused, last_saved_at: null }, NOW)).toBe("Not saved yet · Paused");
    const session = sessionBody({ title: null, kind: "recording" }) as unknown as Parameters<typeof titleOf>[0]["session"];
    expect(titleOf({ session })).toBe("recording");
    expect(titleOf({ session: { ...session, title: "Interview" } })).toBe("Interview");
  });

  it("missingText names the files, at most five", () => {
    expect(missingText([])).toBe("");
    expect(missingText(["a.wav", "b.png"])).toBe("Missing or damaged files: a.wav, b.png");
    expect(missingText(["1", "2", "3", "4", "5", "6", "7"])).toBe("Missing or damaged files: 1, 2, 3, 4, 5 and 2 more");
  });
});

describe("the ./recovery entry", () => {
  // No DOM here: importing must neither throw nor define anything (package.json says no side effects).
  it("imports without a DOM and defines nothing", async () => {
    expect(globalThis.customElements).toBeUndefined();
    const entry = await import("../src/recovery.js");
    expect(typeof entry.defineRecoveryElement).toBe("function");
    expect(typeof entry.LifeboatRecovery).toBe("function");
    expect(entry.LifeboatRecovery.observedAttributes).toEqual(["base-url", "token", "project-id"]);
  });
});

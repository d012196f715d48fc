/**
 * Unit tests of sessions: the heartbeat cadence and its progress, lease loss, idempotent
 * checkpoints, `resumeOrStart`'s decisions and resumable appends, against a fake server
 * (`session-fakes.ts`) and vitest's fake timers.
 */

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { LifeboatError, SessionHandle, attachSession, resumeOrStart, startSession } from "../src/index.js";
import { type Answer, type Seen, checkpointBody, fakeServer, problem, recoveryBody, sessionBody } from "./session-fakes.js";

const OK: Answer = { status: 200, body: { status: "active", lease_expires_at: "2026-12-01T10:00:04.000Z" } };

/** A fake server that creates `job-1` (timeout 4 s) and answers heartbeats with `heartbeat()`. */
function worker(heartbeat: (request: Seen) => Answer = () => OK, other: (request: Seen) => Answer | undefined = () => undefined) {
  return fakeServer((request) => {
    if (request.path === "/sessions/job-1/heartbeat") return heartbeat(request);
    const answer = other(request);
    if (answer !== undefined) return answer;
    if (request.method === "POST" && request.path === "/sessions") return { status: 201, body: sessionBody() };
    if (request.path === "/sessions/job-1/complete") return { status: 200, body: sessionBody({ status: "completed" }) };
    if (request.path === "/sessions/job-1/fail") return { status: 200, body: sessionBody({ status: "failed" }) };
    if (request.path === "/sessions/job-1/checkpoints") return { status: 201, body: { seq: 1, sha256: "00", created_at: "x" } };
    return problem(404, "not-found");
  });
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("startSession", () => {
  // The body is the snake_case of the options, sent once with an Idempotency-Key.
  it("creates the session with its fields and an Idempotency-Key", async () => {
    const server = worker();
    const handle = await startSession(server.client, {
      id: "job-1",
      kind: "render",
      projectId: "essay",
      title: "Render essay",
      heartbeatTimeoutMs: 4000,
      totalUnits: 10,
      metadata: { by: "test" },
    });
    handle.stop();
    const [create] = server.to("POST", "/sessions");
    expect(create?.json).toEqual({
      id: "job-1",
      kind: "render",
      project_id: "essay",
      title: "Render essay",
      heartbeat_timeout_ms: 4000,
      total_units: 10,
      metadata: { by: "test" },
    });
    expect(create?.headers.get("idempotency-key")).toMatch(/^"[0-9a-f-]{36}"$/);
    expect([handle.id, handle.attempt, handle.heartbeatTimeoutMs]).toEqual(["job-1", 1, 4000]);
  });
});

describe("heartbeats", () => {
  // A 4 s timeout heartbeats every 1 s: none before the first interval, one per interval after.
  it("go every heartbeat_timeout / 4 and carry the latest progress", async () => {
    const server = worker();
    const handle = await startSession(server.client, { id: "job-1", kind: "render", heartbeatTimeoutMs: 4000 });
    const beats = () => server.to("POST", "/sessions/job-1/heartbeat");
    await vi.advanceTimersByTimeAsync(999);
    expect(beats()).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(beats().map((b) => b.json)).toEqual([{ attempt: 1 }]);
    handle.setProgress(5, "tts");
    await vi.advanceTimersByTimeAsync(1000);
    handle.setProgress(6);
    await vi.advanceTimersByTimeAsync(1000);
    expect(beats().map((b) => b.json)).toEqual([
      { attempt: 1 },
      { attempt: 1, progress: { completed_units: 5, stage: "tts" } },
      { attempt: 1, progress: { completed_units: 6 } },
    ]);
    handle.stop();
  });

  // complete() stops the timer: no heartbeat after it, however long we wait.
  it("stop after complete", async () => {
    const server = worker();
    const handle = await startSession(server.client, { id: "job-1", kind: "render", heartbeatTimeoutMs: 4000 });
    await vi.advanceTimersByTimeAsync(2000);
    const completed = await handle.complete();
    expect(completed.status).toBe("completed");
    expect(server.to("POST", "/sessions/job-1/complete")[0]?.json).toEqual({ attempt: 1 });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(server.to("POST", "/sessions/job-1/heartbeat")).toHaveLength(2);
    expect(handle.isHeartbeating).toBe(false);
  });

  // fail() sends the error and an emergency checkpoint (no kind: the server makes it `emergency`), then stops.
  it("stop after fail, which sends the error and an emergency checkpoint", async () => {
    const server = worker();
    const handle = await startSession(server.client, { id: "job-1", kind: "render", heartbeatTimeoutMs: 4000 });
    await handle.fail("out of memory", { data: { at: 3 }, completedUnits: 3 });
    expect(server.to("POST", "/sessions/job-1/fail")[0]?.json).toEqual({
      attempt: 1,
      error: "out of memory",
      checkpoint: { data: { at: 3 }, completed_units: 3 },
    });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(server.to("POST", "/sessions/job-1/heartbeat")).toHaveLength(0);
  });

  // A page attaches to a session made a while ago: the first heartbeat goes at once, then every timeout/4.
  it("of an attached session start at once", async () => {
    const server = worker();
    const handle = attachSession(server.client, { id: "job-1", attempt: 2, heartbeat_timeout_ms: 4000 });
    await vi.advanceTimersByTimeAsync(0);
    expect(server.to("POST", "/sessions/job-1/heartbeat").map((b) => b.json)).toEqual([{ attempt: 2 }]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(server.to("POST", "/sessions/job-1/heartbeat")).toHaveLength(2);
    handle.stop();
  });

  // complete() or fail() that failed after its retries keeps the lease: heartbeats go on,
  // and the app can send it again; once it lands they stop.
  it.each(["complete", "fail"] as const)("go on after %s() failed, and stop once it lands", async (finish) => {
    let down = true;
    const server = worker(
      () => OK,
      (request) => (down && request.path === `/sessions/job-1/${finish}` ? problem(422, "invalid-request") : undefined),
    );
    const handle = await startSession(server.client, { id: "job-1", kind: "render", heartbeatTimeoutMs: 4000 });
    const call = () => (finish === "complete" ? handle.complete() : handle.fail("boom"));
    await expect(call()).rejects.toBeInstanceOf(LifeboatError);
    expect(handle.isHeartbeating).toBe(true);
    await vi.advanceTimersByTimeAsync(2000);
    expect(server.to("POST", "/sessions/job-1/heartbeat")).toHaveLength(2);
    down = false;
    await call();
    expect(handle.isHeartbeating).toBe(false);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(server.to("POST", "/sessions/job-1/heartbeat")).toHaveLength(2);
  });

  // A 503 or a network failure is a blip: the next tick sends again.
  it("go on after a failed heartbeat", async () => {
    const answers: Answer[] = [problem(503, "unavailable"), "offline", OK];
    const server = worker(() => answers.shift() ?? OK);
    const handle = await startSession(server.client, { id: "job-1", kind: "render", heartbeatTimeoutMs: 4000 });
    await vi.advanceTimersByTimeAsync(4000);
    expect(server.to("POST", "/sessions/job-1/heartbeat")).toHaveLength(4);
    expect(handle.isLeaseLost).toBe(false);
    handle.stop();
  });

  // A heartbeat still unanswered is left alone for two intervals (a slow server is still
  // extending the lease), then replaced (a hung connection must not stop the heartbeats).
  it("wait for a slow answer, and replace a hung one", async () => {
    const answers: Answer[] = ["hang", OK];
    const server = worker(() => answers.shift() ?? OK);
    const handle = await startSession(server.client, { id: "job-1", kind: "render", heartbeatTimeoutMs: 4000 });
    const beats = () => server.to("POST", "/sessions/job-1/heartbeat").length;
    await vi.advanceTimersByTimeAsync(2000);
    expect(beats()).toBe(1);
    await vi.advanceTimersByTimeAsync(1000);
    expect(beats()).toBe(2);
    await vi.advanceTimersByTimeAsync(1000);
    expect(beats()).toBe(3);
    expect(handle.isLeaseLost).toBe(false);
    handle.stop();
  });

  // The heartbeat timer is unref'd: a Node process whose only work left is heartbeating may exit.
  it("never keep a Node process alive on their own", async () => {
    vi.useRealTimers();
    const timeouts = () => process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;
    const before = timeouts();
    const handle = attachSession(worker().client, { id: "job-1", attempt: 1, heartbeat_timeout_ms: 4000 });
    expect(timeouts()).toBe(before);
    handle.stop();
  });
});

describe("lease loss", () => {
  // The first 409 lease-expired resolves leaseLost and runs each callback once; heartbeats
  // stop and later writes are refused without a request.
  it("fires once on 409 lease-expired and stops heartbeats", async () => {
    const server = worker(() => problem(409, "lease-expired"));
    const handle = await startSession(server.client, { id: "job-1", kind: "render", heartbeatTimeoutMs: 4000 });
    const lost = vi.fn();
    const removed = vi.fn();
    handle.onLeaseLost(lost);
    handle.onLeaseLost(removed)();
    let resolved = false;
    void handle.leaseLost.then(() => (resolved = true));
    await vi.advanceTimersByTimeAsync(1000);
    expect(resolved).toBe(true);
    expect(handle.isLeaseLost).toBe(true);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(server.to("POST", "/sessions/job-1/heartbeat")).toHaveLength(1);
    expect(lost).toHaveBeenCalledTimes(1);
    expect(removed).not.toHaveBeenCalled();

    const error = await handle.checkpoint({ kind: "item", data: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LifeboatError);
    expect((error as LifeboatError).slug).toBe("lease-expired");
    expect(server.to("POST", "/sessions/job-1/checkpoints")).toHaveLength(0);

    // A callback added after the loss runs once, asynchronously.
    const late = vi.fn();
    handle.onLeaseLost(late);
    expect(late).not.toHaveBeenCalled();
    await Promise.resolve();
    expect(late).toHaveBeenCalledTimes(1);
  });

  // A write refused with 409 attempt-mismatch (another worker recovered the session) is a loss
  // too; a heartbeat refused after it does not fire the callbacks a second time.
  it("fires once when a write is fenced, whatever comes after", async () => {
    const server = worker(
      () => problem(409, "session-not-active"),
      (request) => (request.path === "/sessions/job-1/checkpoints" ? problem(409, "attempt-mismatch") : undefined),
    );
    const handle = await startSession(server.client, { id: "job-1", kind: "render", heartbeatTimeoutMs: 4000 });
    const lost = vi.fn();
    handle.onLeaseLost(lost);
    const error = await handle.checkpoint({ kind: "item", data: 1 }).catch((e: unknown) => e);
    expect((error as LifeboatError).slug).toBe("attempt-mismatch");
    expect(lost).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(server.to("POST", "/sessions/job-1/heartbeat")).toHaveLength(0);
    expect(lost).toHaveBeenCalledTimes(1);
  });

  // A session token is refused (401) once its session is finished or purged (Discard in the
  // recovery prompt); a heartbeat answered 404 finds the session gone. Both are a loss:
  // heartbeats stop, the callbacks run once.
  it.each([
    ["a heartbeat answered 401", problem(401, "unauthorized")],
    ["a heartbeat answered 404", problem(404, "not-found")],
  ] as const)("fires once on %s and stops heartbeats", async (_, answer) => {
    const server = worker(() => answer);
    const handle = attachSession(server.client, { id: "job-1", attempt: 1, heartbeat_timeout_ms: 4000 });
    const lost = vi.fn();
    handle.onLeaseLost(lost);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(server.to("POST", "/sessions/job-1/heartbeat")).toHaveLength(1);
    expect(lost).toHaveBeenCalledTimes(1);
    expect([handle.isLeaseLost, handle.isHeartbeating]).toEqual([true, false]);
  });

  it("fires once on a write answered 401", async () => {
    const server = worker(
      () => OK,
      (request) => (request.path === "/sessions/job-1/checkpoints" ? problem(401, "unauthorized") : undefined),
    );
    const handle = attachSession(server.client, { id: "job-1", attempt: 1, heartbeat_timeout_ms: 4000 });
    const lost = vi.fn();
    handle.onLeaseLost(lost);
    await expect(handle.checkpoint({ kind: "item" })).rejects.toMatchObject({ status: 401 });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(lost).toHaveBeenCalledTimes(1);
    expect(server.to("POST", "/sessions/job-1/heartbeat")).toHaveLength(1); // The one at attach.
  });

  // Other refusals (a 404, a 422) are not fencing: the lease is still held.
  it("is not fired by other refusals", async () => {
    const server = worker(
      () => OK,
      (request) => (request.path === "/sessions/job-1/checkpoints" ? problem(422, "invalid-request") : undefined),
    );
    const handle = await startSession(server.client, { id: "job-1", kind: "render", heartbeatTimeoutMs: 4000 });
    await expect(handle.checkpoint({ kind: "item" })).rejects.toBeInstanceOf(LifeboatError);
    expect(handle.isLeaseLost).toBe(false);
    handle.stop();
  });
});

describe("checkpoint", () => {
  // Retries after a 503 and a network failure carry the same Idempotency-Key, so the server
  // stores one checkpoint; the body names the attempt and the snake_case fields.
  it("keeps one Idempotency-Key across retries", async () => {
    const answers: Answer[] = [problem(503, "unavailable"), "offline", { status: 201, body: { seq: 7, sha256: "00", created_at: "x" } }];
    const server = worker(
      () => OK,
      (request) => (request.path === "/sessions/job-1/checkpoints" ? answers.shift() : undefined),
    );
    const handle = await startSession(server.client, { id: "job-1", kind: "render", heartbeatTimeoutMs: 60_000 });
    const seq = handle.checkpoint({
      kind: "stage",
      stage: "tts",
      data: { scene: 3 },
      position: { offset: 12 },
      completedUnits: 3,
      totalUnits: 9,
      assets: ["audio/take.wav"],
    });
    await vi.advanceTimersByTimeAsync(20_000);
    expect(await seq).toBe(7);
    const writes = server.to("POST", "/sessions/job-1/checkpoints");
    expect(writes).toHaveLength(3);
    expect(new Set(writes.map((w) => w.headers.get("idempotency-key"))).size).toBe(1);
    expect(writes[0]?.json).toEqual({
      attempt: 1,
      kind: "stage",
      stage: "tts",
      data: { scene: 3 },
      position: { offset: 12 },
      completed_units: 3,
      total_units: 9,
      assets: ["audio/take.wav"],
    });
    handle.stop();
  });

  // The checkpoint moved the server's progress; the next heartbeat reports it, not older progress.
  it("updates the progress the heartbeats carry", async () => {
    const server = worker();
    const handle = await startSession(server.client, { id: "job-1", kind: "render", heartbeatTimeoutMs: 4000 });
    handle.setProgress(1, "script");
    await handle.checkpoint({ kind: "item", completedUnits: 4 });
    await vi.advanceTimersByTimeAsync(1000);
    expect(server.to("POST", "/sessions/job-1/heartbeat")[0]?.json).toEqual({
      attempt: 1,
      progress: { completed_units: 4, stage: "script" },
    });
    handle.stop();
  });

  // checkpointEvery writes only on multiples, with completedUnits set.
  it("checkpointEvery writes on multiples only", async () => {
    const server = worker();
    const handle = await startSession(server.client, { id: "job-1", kind: "render", heartbeatTimeoutMs: 4000 });
    expect(await handle.checkpointEvery(10, 7, () => ({ kind: "item" }))).toBeNull();
    expect(await handle.checkpointEvery(10, 20, () => ({ kind: "item", data: "x" }))).toBe(1);
    expect(server.to("POST", "/sessions/job-1/checkpoints").map((w) => w.json)).toEqual([
      { attempt: 1, kind: "item", data: "x", completed_units: 20 },
    ]);
    handle.stop();
  });
});

describe("resumeOrStart", () => {
  // No such session: it is started at attempt 1.
  it("starts a session that does not exist", async () => {
    const server = worker();
    const result = await resumeOrStart(server.client, { id: "job-1", kind: "render" });
    expect(result.status).toBe("started");
    expect(result.resumed).toBeNull();
    expect(result.handle).toBeInstanceOf(SessionHandle);
    expect(server.seen.map((r) => `${r.method} ${r.path}`)).toEqual(["GET /sessions/job-1", "POST /sessions"]);
    result.handle?.stop();
  });

  // An incomplete session is recovered with `continue` and resumes from the checkpoint the server names.
  it("recovers an incomplete session from its latest valid checkpoint", async () => {
    const server = fakeServer((request) => {
      if (request.path === "/sessions/job-1") return { status: 200, body: sessionBody({ status: "incomplete" }) };
      if (request.path === "/sessions/job-1/recovery") return { status: 200, body: recoveryBody({ resume_from: checkpointBody(3) }) };
      if (request.path === "/sessions/job-1/recover") {
        return { status: 200, body: { session: sessionBody({ attempt: 2 }), resume_from: checkpointBody(3) } };
      }
      return OK;
    });
    const result = await resumeOrStart(server.client, { id: "job-1", kind: "render" });
    expect(result.status).toBe("recovered");
    expect(result.handle?.attempt).toBe(2);
    expect(result.resumed?.from?.seq).toBe(3);
    expect(result.resumed?.option).toBe("continue");
    const [recover] = server.to("POST", "/sessions/job-1/recover");
    expect(recover?.json).toEqual({ option: "continue", confirm: false });
    expect(recover?.headers.get("idempotency-key")).toBeTruthy();
    result.handle?.stop();
  });

  // `continue` when no checkpoint verifies falls back to a confirmed fresh start.
  it("falls back to fresh_start when nothing can be resumed", async () => {
    const server = fakeServer((request) => {
      if (request.path === "/sessions/job-1") return { status: 200, body: sessionBody({ status: "failed" }) };
      if (request.path === "/sessions/job-1/recovery") return { status: 200, body: recoveryBody({ can_recover: false }) };
      if (request.path === "/sessions/job-1/recover") return { status: 200, body: { session: sessionBody({ attempt: 2 }) } };
      return OK;
    });
    const result = await resumeOrStart(server.client, { id: "job-1", kind: "render" });
    expect(result.resumed).toMatchObject({ option: "fresh_start", from: null });
    expect(server.to("POST", "/sessions/job-1/recover")[0]?.json).toEqual({ option: "fresh_start", confirm: true });
    result.handle?.stop();
  });

  // A session still active (its worker just died) is read again every 200 ms until the server
  // shows it incomplete, then recovered.
  it("waits for an active session's lease to run out, then recovers it", async () => {
    let reads = 0;
    const server = fakeServer((request) => {
      if (request.path === "/sessions/job-1") {
        reads += 1;
        return { status: 200, body: sessionBody({ status: reads < 4 ? "active" : "incomplete" }) };
      }
      if (request.path === "/sessions/job-1/recovery") return { status: 200, body: recoveryBody() };
      if (request.path === "/sessions/job-1/recover") return { status: 200, body: { session: sessionBody({ attempt: 2 }) } };
      return OK;
    });
    const pending = resumeOrStart(server.client, { id: "job-1", kind: "render", option: "restart_batch" });
    await vi.advanceTimersByTimeAsync(599);
    expect(reads).toBe(3);
    await vi.advanceTimersByTimeAsync(1);
    const result = await pending;
    expect(reads).toBe(4);
    expect(result.status).toBe("recovered");
    expect(server.to("POST", "/sessions/job-1/recover")[0]?.json).toEqual({ option: "restart_batch", confirm: false });
    result.handle?.stop();
  });

  // Still active one timeout and 5 s later: another worker holds it; nothing is recovered.
  it("gives up on a session another worker keeps alive", async () => {
    const server = fakeServer((request) =>
      request.path === "/sessions/job-1" ? { status: 200, body: sessionBody({ heartbeat_timeout_ms: 4000 }) } : OK,
    );
    const pending = resumeOrStart(server.client, { id: "job-1", kind: "render" }).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(9_200);
    const error = await pending;
    expect(String(error)).toMatch(/still active/);
    expect(server.to("GET", "/sessions/job-1").length).toBeGreaterThanOrEqual(45);
    expect(server.to("POST", "/sessions/job-1/recover")).toHaveLength(0);
  });

  // A completed session is finished: no handle, no recovery.
  it("answers finished for a completed session", async () => {
    const server = fakeServer(() => ({ status: 200, body: sessionBody({ status: "completed" }) }));
    const result = await resumeOrStart(server.client, { id: "job-1", kind: "render" });
    expect(result).toMatchObject({ status: "finished", handle: null, resumed: null, session: { status: "completed" } });
    expect(server.seen).toHaveLength(1);
  });
});

describe("assets", () => {
  const bytes = (text: string) => new TextEncoder().encode(text);
  const text = (seen: Seen | undefined) => new TextDecoder().decode(seen?.bytes ?? new Uint8Array());
  const appends = (server: ReturnType<typeof fakeServer>) => server.to("POST", "/sessions/job-1/assets/audio/take.wav");

  function held(handle: (request: Seen) => Answer) {
    const server = fakeServer((request) => (request.path.endsWith("/heartbeat") ? OK : handle(request)));
    const session = attachSession(server.client, { id: "job-1", attempt: 2, heartbeat_timeout_ms: 3_600_000 });
    return { server, session };
  }

  // Without an offset the first append asks the size (the asset list), later ones use the size it kept.
  it("append keeps the asset's size", async () => {
    let size = 5;
    const { server, session } = held((request) => {
      if (request.method === "GET") return { status: 200, body: { items: [{ name: "audio/take.wav", size }], next_cursor: null } };
      size += request.bytes?.length ?? 0;
      return { status: 200, body: { name: "audio/take.wav", size } };
    });
    expect(await session.append("audio/take.wav", bytes("abc"))).toBe(8);
    expect(await session.append("audio/take.wav", bytes("de"))).toBe(10);
    expect(appends(server).map((r) => r.query)).toEqual(["offset=5&attempt=2", "offset=8&attempt=2"]);
    expect(server.to("GET", "/sessions/job-1/assets")).toHaveLength(1);
    expect(server.to("GET", "/sessions/job-1/assets")[0]?.query).toBe("limit=1000");
    session.stop();
  });

  // A larger chunk re-sent from the offset of an unanswered append: the server already has its
  // first bytes. They are read back (Range), found equal, and only the rest is sent.
  it("append resumes from current_size when the stored bytes are the ones being sent", async () => {
    const stored = bytes("0123456789abcd");
    const { server, session } = held((request) => {
      if (request.method === "GET") return { status: 206, body: stored.slice(10, 14) };
      if (request.query.startsWith("offset=10&")) return problem(409, "offset-mismatch", { current_size: 14 });
      return { status: 200, body: { name: "audio/take.wav", size: 14 + (request.bytes?.length ?? 0) } };
    });
    expect(await session.append("audio/take.wav", bytes("abcdefgh"), 10)).toBe(18);
    const [read] = server.to("GET", "/sessions/job-1/assets/audio/take.wav");
    expect(read?.headers.get("range")).toBe("bytes=10-13");
    expect(appends(server).map((r) => [r.query, text(r)])).toEqual([
      ["offset=10&attempt=2", "abcdefgh"],
      ["offset=14&attempt=2", "efgh"],
    ]);
    session.stop();
  });

  // Different bytes there: the 409 is thrown, never taken for success, and nothing more is sent.
  it("append throws offset-mismatch when the stored bytes differ", async () => {
    const { server, session } = held((request) => {
      if (request.method === "GET") return { status: 206, body: bytes("XXXX") };
      return problem(409, "offset-mismatch", { current_size: 14 });
    });
    const error = await session.append("audio/take.wav", bytes("abcdefgh"), 10).catch((e: unknown) => e);
    expect((error as LifeboatError).slug).toBe("offset-mismatch");
    expect(appends(server)).toHaveLength(1);
    session.stop();
  });

  // The stored bytes reach past the chunk (the server would have answered 200 had they been
  // equal) or stop before its offset (a gap): thrown without reading anything back.
  it("append throws at once when the chunk does not end past the stored bytes", async () => {
    for (const currentSize of [18, 30, 4]) {
      const { server, session } = held(() => problem(409, "offset-mismatch", { current_size: currentSize }));
      await expect(session.append("audio/take.wav", bytes("abcdefgh"), 10)).rejects.toBeInstanceOf(LifeboatError);
      expect(server.to("GET", "/sessions/job-1/assets/audio/take.wav")).toHaveLength(0);
      // The next append without an offset goes where the server says the asset ends.
      await session.append("audio/take.wav", bytes("z")).catch(() => {});
      expect(appends(server)[1]?.query).toBe(`offset=${currentSize}&attempt=2`);
      session.stop();
    }
  });

  // A 409 without current_size: the size comes from the asset list, paged.
  it("append reads the size from the asset list when the problem has none", async () => {
    const { server, session } = held((request) => {
      if (request.method === "GET" && request.query === "limit=1000") {
        return { status: 200, body: { items: [{ name: "other", size: 1 }], next_cursor: "p2" } };
      }
      if (request.method === "GET" && request.query === "limit=1000&cursor=p2") {
        return { status: 200, body: { items: [{ name: "audio/take.wav", size: 12 }], next_cursor: null } };
      }
      if (request.method === "GET") return { status: 206, body: bytes("ab") };
      if (request.query.startsWith("offset=10&")) return problem(409, "offset-mismatch");
      return { status: 200, body: { name: "audio/take.wav", size: 18 } };
    });
    expect(await session.append("audio/take.wav", bytes("abcdefgh"), 10)).toBe(18);
    expect(appends(server).map((r) => r.query)).toEqual(["offset=10&attempt=2", "offset=12&attempt=2"]);
    session.stop();
  });

  // An append after a network failure is sent again at the same offset (the server answers 200 if it landed).
  it("append retries a failed chunk at the same offset", async () => {
    const answers: Answer[] = ["offline", { status: 200, body: { name: "audio/take.wav", size: 3 } }];
    const { server, session } = held(() => answers.shift() ?? problem(500, "internal"));
    const size = session.append("audio/take.wav", bytes("abc"), 0);
    await vi.advanceTimersByTimeAsync(1000);
    expect(await size).toBe(3);
    expect(appends(server).map((r) => r.query)).toEqual(["offset=0&attempt=2", "offset=0&attempt=2"]);
    session.stop();
  });

  // upload is a fenced PUT of the bytes; pinnedAsset reads the checkpoint's version.
  it("upload and pinnedAsset", async () => {
    const { server, session } = held((request) => {
      if (request.method === "PUT") return { status: 201, body: { name: "cover.png", size: 3, sha256: "00", status: "ok" } };
      return { status: 200, body: bytes("old") };
    });
    expect((await session.upload("cover.png", bytes("png"))).size).toBe(3);
    const [put] = server.to("PUT", "/sessions/job-1/assets/cover.png");
    expect([put?.query, text(put), put?.headers.get("content-type")]).toEqual(["attempt=2", "png", "application/octet-stream"]);
    expect(new TextDecoder().decode(await session.pinnedAsset(4, "cover.png"))).toBe("old");
    expect(server.seen.at(-1)?.path).toBe("/sessions/job-1/checkpoints/4/assets/cover.png");
    session.stop();
  });

  // A fenced asset write is a lease loss like any other.
  it("a fenced upload loses the lease", async () => {
    const { session } = held(() => problem(409, "attempt-mismatch"));
    await expect(session.upload("cover.png", bytes("png"))).rejects.toBeInstanceOf(LifeboatError);
    expect(session.isLeaseLost).toBe(true);
    await expect(session.append("cover.png", bytes("png"), 0)).rejects.toMatchObject({ slug: "attempt-mismatch" });
  });
});

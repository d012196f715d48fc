/**
 * Unit tests of the HTTP client: backoff, UUIDv7 keys, problem parsing and the retry
 * loop, against a scripted fake `fetch` and vitest's fake timers (no server, no waiting).
 */

import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import {
  ATTEMPTS_MAX,
  BACKOFF_MAX_MS,
  Client,
  LifeboatError,
  RETRY_AFTER_MAX_MS,
  backoffMs,
  uuidv7,
} from "../src/index.js";

/** One scripted answer of the fake server: a response, or a network failure. */
type Step = Answer | "offline";
type Answer = { status: number; body?: unknown; headers?: Record<string, string> };

interface Call {
  url: string;
  method: string;
  headers: Headers;
  body: string | null;
}

/** A `fetch` that records each call and answers with the next step (the last one repeats). */
function fakeFetch(...steps: Step[]): { fetch: typeof globalThis.fetch; calls: Call[] } {
  const calls: Call[] = [];
  const fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    calls.push({
      url: String(input),
      method: init?.method ?? "GET",
      headers: new Headers(init?.headers),
      body: typeof init?.body === "string" ? init.body : null,
    });
    const step = steps[Math.min(calls.length, steps.length) - 1];
    if (step === undefined) throw new Error("fakeFetch needs at least one step");
    if (step === "offline") throw new TypeError("fetch failed");
    const text = step.body === undefined ? null : typeof step.body === "string" ? step.body : JSON.stringify(step.body);
    return new Response(text, { status: step.status, headers: step.headers ?? {} });
  };
  return { fetch, calls };
}

function problem(status: number, slug: string, extra: Record<string, unknown> = {}): Answer {
  return {
    status,
    headers: { "content-type": "application/problem+json" },
    body: { type: `https://lifeboat.dev/problems/${slug}`, title: `title of ${slug}`, status, detail: `detail of ${slug}`, ...extra },
  };
}

function client(fetch: typeof globalThis.fetch): Client {
  return new Client({ baseUrl: "http://127.0.0.1:7433/", token: "lb_test", fetch });
}

/** The error a promise rejects with (fails the test if it resolves). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection");
}

describe("backoffMs", () => {
  // Full jitter: any wait from 0 to the window, the window being 100 ms doubled per attempt up to 8 s.
  it("stays within [0, window] and the window doubles up to 8 s", () => {
    const windows = [100, 200, 400, 800, 1600, 3200, 6400, 8000, 8000, 8000, 8000, 8000];
    windows.forEach((windowMs, i) => {
      expect(backoffMs(i + 1, null, () => 0)).toBe(0);
      expect(backoffMs(i + 1, null, () => 0.999999)).toBe(windowMs - 1);
      expect(backoffMs(i + 1, null, () => 0.5)).toBe(windowMs / 2);
    });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1000 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (attempt, r) => {
        const ms = backoffMs(attempt, null, () => r);
        return Number.isInteger(ms) && ms >= 0 && ms <= BACKOFF_MAX_MS;
      }),
    );
  });

  // The server's Retry-After wins over the jitter, up to a cap that stops a wrong header stalling saves.
  it("honours Retry-After, capped", () => {
    expect(backoffMs(1, 2000, () => 0)).toBe(2000);
    expect(backoffMs(9, 0, () => 0.9)).toBe(0);
    expect(backoffMs(2, 3_600_000, Math.random)).toBe(RETRY_AFTER_MAX_MS);
  });
});

describe("uuidv7", () => {
  afterEach(() => vi.restoreAllMocks());

  // RFC 9562 layout: version 7, variant 10, and the first 48 bits are the Unix time in ms.
  it("has the version, variant and timestamp of RFC 9562", () => {
    const now = 1_767_225_600_123;
    vi.spyOn(Date, "now").mockReturnValue(now);
    const id = uuidv7();
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(parseInt(id.replace(/-/g, "").slice(0, 12), 16)).toBe(now);
  });

  // Keys made in later milliseconds sort after earlier ones, and none repeat.
  it("sorts by time across milliseconds and does not repeat", () => {
    let now = 1_767_225_600_000;
    vi.spyOn(Date, "now").mockImplementation(() => now++);
    const ids = Array.from({ length: 1000 }, () => uuidv7());
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe("Client", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  // The path gets /api/v1 after the base URL (trailing slash dropped), the token goes in
  // Authorization, each body kind gets its content type, and caller headers win.
  it("builds requests", async () => {
    const { fetch, calls } = fakeFetch({ status: 200, body: {} });
    const lifeboat = client(fetch);
    await lifeboat.request("PUT", "/projects/a", { json: { state: {} } });
    await lifeboat.request("PATCH", "/projects/a", { mergePatch: { x: null }, headers: { "If-Match": '"3"' } });
    await lifeboat.request("POST", "/sessions/s/assets/a.bin?offset=0", { body: "bytes", contentType: "application/octet-stream" });
    expect(calls.map((c) => [c.method, c.url])).toEqual([
      ["PUT", "http://127.0.0.1:7433/api/v1/projects/a"],
      ["PATCH", "http://127.0.0.1:7433/api/v1/projects/a"],
      ["POST", "http://127.0.0.1:7433/api/v1/sessions/s/assets/a.bin?offset=0"],
    ]);
    expect(calls.map((c) => c.headers.get("content-type"))).toEqual([
      "application/json",
      "application/merge-patch+json",
      "application/octet-stream",
    ]);
    expect(calls.every((c) => c.headers.get("authorization") === "Bearer lb_test")).toBe(true);
    expect(calls[0]?.body).toBe('{"state":{}}');
    expect(calls[1]?.headers.get("if-match")).toBe('"3"');
    expect(calls[0]?.headers.has("idempotency-key")).toBe(false);
  });

  // A problem body becomes a LifeboatError whose slug is the last segment of `type`.
  it("turns a problem into a LifeboatError", async () => {
    const { fetch } = fakeFetch(problem(409, "offset-mismatch", { current_size: 42 }));
    const error = await rejection(client(fetch).request("POST", "/sessions/s/assets/a?offset=7", { body: "x" }));
    expect(error).toBeInstanceOf(LifeboatError);
    expect(error).toMatchObject({
      name: "LifeboatError",
      kind: "problem",
      status: 409,
      slug: "offset-mismatch",
      title: "title of offset-mismatch",
      detail: "detail of offset-mismatch",
      retryAfterMs: null,
      transient: false,
      problem: { current_size: 42 },
    });
  });

  // A refusal without a problem body (a proxy's HTML page) still says its status.
  it("describes a non-problem refusal by its status", async () => {
    const { fetch } = fakeFetch({ status: 502, body: "<html>bad gateway</html>" });
    const error = await rejection(client(fetch).request("POST", "/sessions", { json: {} }));
    expect(error).toMatchObject({ kind: "problem", status: 502, slug: "", detail: "", transient: true, problem: null });
  });

  // A fetch that rejects with a TypeError means no answer: kind offline, status 0, transient.
  it("reports a network failure as offline", async () => {
    const { fetch, calls } = fakeFetch("offline");
    const error = await rejection(client(fetch).request("GET", "/projects/a", { retry: false }));
    expect(error).toMatchObject({ kind: "offline", status: 0, slug: "", transient: true, retryAfterMs: null });
    expect((error as Error).cause).toBeInstanceOf(TypeError);
    expect(calls).toHaveLength(1);
  });

  // A 503 with Retry-After: 2 is sent again exactly 2 s later, and its 200 is the answer.
  it("retries a 503 after its Retry-After", async () => {
    const { fetch, calls } = fakeFetch({ ...problem(503, "storage-unavailable"), headers: { "retry-after": "2" } }, { status: 200, body: { ok: true } });
    const answer = client(fetch).json("GET", "/projects/a");
    await vi.advanceTimersByTimeAsync(1999);
    expect(calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toHaveLength(2);
    await expect(answer).resolves.toEqual({ ok: true });
  });

  // A GET that finds the network down is tried again within the first window (100 ms).
  it("retries a network failure", async () => {
    const { fetch, calls } = fakeFetch("offline", { status: 200, body: {} });
    const answer = client(fetch).request("GET", "/projects/a");
    await vi.advanceTimersByTimeAsync(100);
    expect(calls).toHaveLength(2);
    await expect(answer).resolves.toHaveProperty("status", 200);
  });

  // A 422 is final: sending the same request again cannot help, even for a retried GET.
  it("does not retry a 422", async () => {
    const { fetch, calls } = fakeFetch(problem(422, "validation-failed"), { status: 200 });
    const error = await rejection(client(fetch).request("GET", "/projects?limit=5000"));
    expect(error).toMatchObject({ status: 422, slug: "validation-failed", transient: false });
    expect(calls).toHaveLength(1);
  });

  // As in the Rust SDK, every 5xx is transient (500, 507 storage full, …), and 408 and 429; other 4xx are not.
  it("takes every 5xx, 408 and 429 as transient, and no other 4xx", async () => {
    for (const [status, transient] of [[500, true], [501, true], [507, true], [599, true], [408, true], [429, true], [404, false], [413, false]] as const) {
      const { fetch } = fakeFetch(problem(status, "x"));
      expect(await rejection(client(fetch).request("POST", "/sessions", { json: {} }))).toMatchObject({ status, transient });
    }
  });

  // Every attempt of a keyed write carries the same Idempotency-Key, so the server does it once.
  it("keeps the Idempotency-Key across retries", async () => {
    const { fetch, calls } = fakeFetch(problem(503, "storage-unavailable"), "offline", problem(409, "idempotency-key-in-use"), { status: 201, body: {} });
    const answer = client(fetch).request("POST", "/sessions", { json: { kind: "train" }, idempotencyKey: "0193e2f4-key" });
    await vi.runAllTimersAsync();
    await expect(answer).resolves.toHaveProperty("status", 201);
    expect(calls.map((c) => c.headers.get("idempotency-key"))).toEqual(Array(4).fill('"0193e2f4-key"'));
    expect(new Set(calls.map((c) => c.body)).size).toBe(1);
  });

  // A write without a key is not retried by default: a second try might do it twice.
  it("does not retry an unkeyed write", async () => {
    const { fetch, calls } = fakeFetch(problem(503, "storage-unavailable"), { status: 201 });
    const error = await rejection(client(fetch).request("POST", "/sessions", { json: {} }));
    expect(error).toMatchObject({ status: 503, transient: true });
    expect(calls).toHaveLength(1);
  });

  // A server that keeps failing is given ATTEMPTS_MAX attempts, then its last error is thrown.
  it("gives up after ATTEMPTS_MAX attempts", async () => {
    const { fetch, calls } = fakeFetch(problem(503, "storage-unavailable"));
    const error = rejection(client(fetch).request("GET", "/projects/a"));
    await vi.runAllTimersAsync();
    expect(await error).toMatchObject({ status: 503 });
    expect(calls).toHaveLength(ATTEMPTS_MAX);
  });

  // Aborting while waiting between attempts ends the request at once with the signal's reason.
  it("stops waiting when aborted", async () => {
    const { fetch, calls } = fakeFetch({ ...problem(429, "rate-limited"), headers: { "retry-after": "30" } });
    const controller = new AbortController();
    const error = rejection(client(fetch).request("GET", "/projects/a", { signal: controller.signal }));
    await vi.advanceTimersByTimeAsync(1000);
    controller.abort(new Error("user left"));
    expect(await error).toHaveProperty("message", "user left");
    await vi.runAllTimersAsync();
    expect(calls).toHaveLength(1);
  });

  // requestOnce never retries, even a GET, so the AutoSaver can run its own schedule.
  it("requestOnce sends once", async () => {
    const { fetch, calls } = fakeFetch(problem(503, "storage-unavailable"), { status: 200 });
    const error = await rejection(client(fetch).requestOnce("GET", "/projects/a"));
    expect(error).toMatchObject({ status: 503, transient: true });
    expect(calls).toHaveLength(1);
  });

  // Without `fetch`, the client uses globalThis.fetch, called with the global as `this`.
  it("defaults to a bound globalThis.fetch", async () => {
    const { fetch, calls } = fakeFetch({ status: 200 });
    vi.stubGlobal("fetch", function (this: unknown, input: RequestInfo | URL, init?: RequestInit) {
      if (this !== globalThis) throw new TypeError("Illegal invocation");
      return fetch(input, init);
    });
    await new Client({ baseUrl: "http://127.0.0.1:7433", token: "t" }).request("GET", "/stats");
    expect(calls).toHaveLength(1);
  });
});

describe("project wrappers", () => {
  // getProject reads a revision, and a missing project is null rather than an error.
  it("getProject", async () => {
    const body = { id: "doc", revision: 3, state: { a: 1 }, created_at: "t", updated_at: "t" };
    const { fetch, calls } = fakeFetch({ status: 200, body }, problem(404, "not-found"));
    const lifeboat = client(fetch);
    expect(await lifeboat.getProject("doc", { revision: 3 })).toEqual(body);
    expect(await lifeboat.getProject("gone")).toBeNull();
    expect(calls.map((c) => c.url)).toEqual([
      "http://127.0.0.1:7433/api/v1/projects/doc?revision=3",
      "http://127.0.0.1:7433/api/v1/projects/gone",
    ]);
  });

  // Saves carry a fresh UUIDv7 key (so they are retried safely) unless given one; If-Match rides in headers.
  it("putProject and patchProject", async () => {
    const saved = { id: "doc", revision: 4, updated_at: "t", size_bytes: 9 };
    const { fetch, calls } = fakeFetch({ status: 200, body: saved });
    const lifeboat = client(fetch);
    expect(await lifeboat.putProject("doc", { state: { a: 1 }, title: "Doc" })).toEqual(saved);
    expect(await lifeboat.patchProject("doc", { a: 2 }, { headers: { "if-match": '"4"' }, idempotencyKey: "k" })).toEqual(saved);
    const [put, patch] = calls;
    expect(put).toMatchObject({ method: "PUT", body: '{"state":{"a":1},"title":"Doc"}' });
    expect(put?.headers.get("idempotency-key")).toMatch(/^"[0-9a-f]{8}-[0-9a-f]{4}-7/);
    expect(patch).toMatchObject({ method: "PATCH", body: '{"a":2}' });
    expect(patch?.headers.get("content-type")).toBe("application/merge-patch+json");
    expect(patch?.headers.get("if-match")).toBe('"4"');
    expect(patch?.headers.get("idempotency-key")).toBe('"k"');
  });
});

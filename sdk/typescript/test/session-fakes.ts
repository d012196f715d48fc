/**
 * A fake Lifeboat for unit tests: a `fetch` that records every request and answers with
 * what a handler returns for it (no server, no network), plus helpers to build answers.
 */

import { Client } from "../src/index.js";

/** One request as the fake server saw it. */
export interface Seen {
  method: string;
  /** The path below `/api/v1`, without the query. */
  path: string;
  /** The query string, without `?` (empty if none). */
  query: string;
  headers: Headers;
  /** The parsed JSON body, or undefined. */
  json: unknown;
  /** The raw body bytes, or null. */
  bytes: Uint8Array | null;
}

/** An answer: a response, a network failure, or none until the request is aborted. */
export type Answer = { status: number; body?: unknown; headers?: Record<string, string> } | "offline" | "hang";

export interface FakeServer {
  client: Client;
  seen: Seen[];
  /** The requests to `method path` (path below `/api/v1`, no query). */
  to(method: string, path: string): Seen[];
}

/** A client whose `fetch` answers every request with `handle(request)`. */
export function fakeServer(handle: (request: Seen) => Answer): FakeServer {
  const seen: Seen[] = [];
  const fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = new URL(String(input));
    const body = init?.body;
    let bytes: Uint8Array | null = null;
    if (typeof body === "string") bytes = new TextEncoder().encode(body);
    else if (ArrayBuffer.isView(body)) bytes = new Uint8Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
    else if (body instanceof ArrayBuffer) bytes = new Uint8Array(body.slice(0));
    const headers = new Headers(init?.headers);
    const request: Seen = {
      method: init?.method ?? "GET",
      path: url.pathname.replace(/^\/api\/v1/, ""),
      query: url.search.replace(/^\?/, ""),
      headers,
      json: typeof body === "string" && headers.get("content-type")?.includes("json") ? JSON.parse(body) : undefined,
      bytes,
    };
    seen.push(request);
    const answer = handle(request);
    if (answer === "offline") throw new TypeError("fetch failed");
    if (answer === "hang") {
      return new Promise((_, reject) => init?.signal?.addEventListener("abort", () => reject(init.signal?.reason), { once: true }));
    }
    const text =
      answer.body === undefined ? null : answer.body instanceof Uint8Array ? answer.body : typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body);
    return new Response(text as BodyInit | null, { status: answer.status, headers: answer.headers ?? {} });
  };
  const client = new Client({ baseUrl: "http://lifeboat.test", token: "lb_test", fetch });
  const to = (method: string, path: string): Seen[] => seen.filter((r) => r.method === method && r.path === path);
  return { client, seen, to };
}

/** An RFC 9457 problem answer. */
export function problem(status: number, slug: string, extra: Record<string, unknown> = {}): Answer {
  return {
    status,
    headers: { "content-type": "application/problem+json" },
    body: { type: `https://lifeboat.dev/problems/${slug}`, title: slug, status, detail: `detail of ${slug}`, ...extra },
  };
}

/** A session object as the server sends it. */
export function sessionBody(fields: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: "job-1",
    kind: "render",
    status: "active",
    attempt: 1,
    heartbeat_timeout_ms: 4000,
    checkpoint_retention: 5,
    max_attempts: 10,
    created_at: "2026-12-01T10:00:00.000Z",
    updated_at: "2026-12-01T10:00:00.000Z",
    progress: {},
    stalled: false,
    ...fields,
  };
}

/** A checkpoint object as the server sends it. */
export function checkpointBody(seq: number, fields: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    seq,
    attempt: 1,
    kind: "item",
    data: { done: seq },
    sha256: "00",
    valid: true,
    assets: [],
    created_at: "2026-12-01T10:00:00.000Z",
    ...fields,
  };
}

/** A recovery assessment as the server sends it. */
export function recoveryBody(fields: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    session: sessionBody({ status: "incomplete" }),
    can_recover: true,
    confidence: 1,
    work_lost_ms: 0,
    assets: { total: 0, ok: 0, missing: 0, corrupt: 0 },
    missing_assets: [],
    ...fields,
  };
}

/**
 * The HTTP client: requests with a bearer token, RFC 9457 problems as errors, and the
 * retry policy every safe request uses.
 *
 * It mirrors the Rust SDK (`crates/lifeboat-sdk/src/client.rs`): the same error kinds,
 * slugs, transient statuses (408, 429 and every 5xx) and backoff. Importing this module has no side effects:
 * nothing touches `window`, `fetch` or storage until a `Client` is used.
 *
 * @module
 */

import type { components } from "./api.js";

/** An RFC 9457 `application/problem+json` body as the server sends it. */
export type Problem = components["schemas"]["Problem"];
/** `GET /projects/{id}`: a project at one revision. */
export type ProjectBody = components["schemas"]["ProjectBody"];
/** The answer to a project save (`PUT`, `PATCH`, `restore`). */
export type ProjectSaved = components["schemas"]["ProjectSaved"];
/** The body of `PUT /projects/{id}`. */
export type PutProject = components["schemas"]["PutProject"];

/** Attempts per request before giving up: about a minute of backoff in all. */
export const ATTEMPTS_MAX = 12;
/** The first backoff window; each later attempt doubles it. */
export const BACKOFF_FIRST_MS = 100;
/** The largest backoff window, so a long outage is still probed every few seconds. */
export const BACKOFF_MAX_MS = 8_000;
/** The longest `Retry-After` obeyed, so a wrong header cannot stall a save for hours. */
export const RETRY_AFTER_MAX_MS = 32_000;


/** How to reach a Lifeboat server. */
export interface ClientOptions {
  /** The server's origin, e.g. `http://127.0.0.1:7433`; `/api/v1` is added to every path. */
  baseUrl: string;
  /** An API key, or a project or session token (`lbp_…`, `lbs_…`). */
  token: string;
  /** The `fetch` to use; `globalThis.fetch` by default. */
  fetch?: typeof globalThis.fetch;
}

/** One request. At most one of `json`, `mergePatch` and `body` is used, in that order. */
export interface RequestOptions {
  /** A value sent as `application/json`. */
  json?: unknown;
  /** A value sent as `application/merge-patch+json` (RFC 7396). */
  mergePatch?: unknown;
  /** Raw bytes; must be re-readable (not a stream) if the request may be retried. */
  body?: BodyInit;
  /** The `Content-Type` of `body`. */
  contentType?: string;
  /** More headers (`If-Match`, `Range`, …); they win over the client's own. */
  headers?: Record<string, string>;
  /** Sent as `Idempotency-Key`, the same on every attempt. */
  idempotencyKey?: string;
  /** Lets the request outlive the page (`pagehide` saves); bodies are limited to 64 KiB. */
  keepalive?: boolean;
  /** Cancels the request and any wait between attempts. */
  signal?: AbortSignal;
  /** Retry transient failures; by default only `GET`, `HEAD` and requests with an `idempotencyKey`. */
  retry?: boolean;
}

/** The options of the typed wrappers: everything but the body. */
export type CallOptions = Omit<RequestOptions, "json" | "mergePatch" | "body" | "contentType">;

/** What a `LifeboatError` carries. */
export interface LifeboatErrorFields {
  /** `problem`: the server refused; `offline`: the server could not be reached. */
  kind: "problem" | "offline";
  /** HTTP status; 0 when offline. */
  status: number;
  /** The problem type's stable slug (the last segment of `type`), e.g. `precondition-failed`; empty when offline or when the body was no problem. */
  slug: string;
  /** The problem type's summary, or the HTTP status text. */
  title: string;
  /** What went wrong this time. */
  detail: string;
  /** The server's `Retry-After`, in ms, or null. */
  retryAfterMs: number | null;
  /** Whether the same request may succeed if sent again later. */
  transient: boolean;
  /** The whole problem body (for `current_size`, `errors`), or null. */
  problem: Problem | null;
}

/** Why a request did not succeed: a refusal (an RFC 9457 problem) or no answer at all. */
export class LifeboatError extends Error implements LifeboatErrorFields {
  declare readonly kind: "problem" | "offline";
  declare readonly status: number;
  declare readonly slug: string;
  declare readonly title: string;
  declare readonly detail: string;
  declare readonly retryAfterMs: number | null;
  declare readonly transient: boolean;
  declare readonly problem: Problem | null;

  constructor(fields: LifeboatErrorFields, options?: ErrorOptions) {
    super(
      fields.kind === "offline"
        ? `the server is unreachable: ${fields.detail}`
        : `${fields.status} ${fields.slug || fields.title}: ${fields.detail}`,
      options,
    );
    this.name = "LifeboatError";
    Object.assign(this, fields);
  }
}

/** A Lifeboat server and the token to use with it. */
export class Client {
  readonly #baseUrl: string;
  readonly #token: string;
  readonly #fetch: typeof globalThis.fetch;

  constructor(options: ClientOptions) {
    this.#baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#token = options.token;
    // Bound: a browser's `fetch` throws "Illegal invocation" when called on another `this`.
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** The server's origin (and base path), as given, without a trailing slash. */
  get baseUrl(): string {
    return this.#baseUrl;
  }

  /**
   * Sends a request, retrying transient failures (see `RequestOptions.retry`) with
   * full-jitter backoff and the server's `Retry-After`, up to `ATTEMPTS_MAX` attempts.
   * Resolves to the `Response` of a 2xx (or 304); rejects with a `LifeboatError`, or
   * with the signal's reason when aborted.
   */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const retry =
      options.retry ?? (method === "GET" || method === "HEAD" || options.idempotencyKey !== undefined);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.requestOnce(method, path, options);
      } catch (error) {
        const final = !retry || attempt >= ATTEMPTS_MAX || !(error instanceof LifeboatError && error.transient);
        if (final) throw error;
        await sleep(backoffMs(attempt, error.retryAfterMs), options.signal);
      }
    }
  }

  /** Sends a request once, without retries, for callers with a schedule of their own. */
  async requestOnce(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const headers = new Headers({ authorization: `Bearer ${this.#token}` });
    let body: BodyInit | null = null;
    if (options.json !== undefined) {
      body = JSON.stringify(options.json);
      headers.set("content-type", "application/json");
    } else if (options.mergePatch !== undefined) {
      body = JSON.stringify(options.mergePatch);
      headers.set("content-type", "application/merge-patch+json");
    } else if (options.body !== undefined) {
      body = options.body;
      if (options.contentType !== undefined) headers.set("content-type", options.contentType);
    }
    // An RFC 8941 string, as the Rust SDK sends it; the server also takes the bare form.
    if (options.idempotencyKey !== undefined) headers.set("idempotency-key", `"${options.idempotencyKey}"`);
    for (const [name, value] of Object.entries(options.headers ?? {})) headers.set(name, value);

    const fetch = this.#fetch;
    let response: Response;
    try {
      response = await fetch(`${this.#baseUrl}/api/v1${path}`, {
        method,
        headers,
        body,
        keepalive: options.keepalive ?? false,
        signal: options.signal ?? null,
      });
    } catch (error) {
      // `fetch` rejects with a TypeError when the network fails; anything else
      // (an abort, a bug in an injected fetch) is not ours to rename.
      if (options.signal?.aborted || !(error instanceof TypeError)) throw error;
      throw new LifeboatError(
        {
          kind: "offline",
          status: 0,
          slug: "",
          title: "offline",
          detail: error.message,
          retryAfterMs: null,
          transient: true,
          problem: null,
        },
        { cause: error },
      );
    }
    if (response.ok || response.status === 304) return response;
    throw await refusal(response);
  }

  /** `request`, then the answer's JSON body. */
  async json<T>(method: string, path: string, options?: RequestOptions): Promise<T> {
    const response = await this.request(method, path, options);
    return (await response.json()) as T;
  }

  /** `GET /projects/{id}`, at `revision` if given; null when there is no such project. */
  async getProject(id: string, options: CallOptions & { revision?: number } = {}): Promise<ProjectBody | null> {
    const query = options.revision === undefined ? "" : `?revision=${options.revision}`;
    try {
      return await this.json<ProjectBody>("GET", `${projectPath(id)}${query}`, options);
    } catch (error) {
      if (error instanceof LifeboatError && error.status === 404) return null;
      throw error;
    }
  }

  /**
   * `PUT /projects/{id}`: saves the whole state as a new revision. Safe to retry: it
   * carries a fresh UUIDv7 `Idempotency-Key` unless given one. Pass `If-Match: "<revision>"`
   * or `If-None-Match: *` in `headers` for a conditional save.
   */
  putProject(id: string, project: PutProject, options: CallOptions = {}): Promise<ProjectSaved> {
    return this.json("PUT", projectPath(id), { ...options, json: project, idempotencyKey: options.idempotencyKey ?? uuidv7() });
  }

  /** `PATCH /projects/{id}`: merges `patch` (RFC 7396) into the stored state; like `putProject` otherwise. */
  patchProject(id: string, patch: unknown, options: CallOptions = {}): Promise<ProjectSaved> {
    return this.json("PATCH", projectPath(id), { ...options, mergePatch: patch, idempotencyKey: options.idempotencyKey ?? uuidv7() });
  }
}

/**
 * How long to wait after failed attempt `attempt` (1-based): what the server asked for in
 * `Retry-After` (at most `RETRY_AFTER_MAX_MS`), or else full jitter over a window that
 * starts at `BACKOFF_FIRST_MS` and doubles up to `BACKOFF_MAX_MS`.
 */
export function backoffMs(attempt: number, retryAfterMs: number | null, random: () => number = Math.random): number {
  if (retryAfterMs !== null) return Math.min(retryAfterMs, RETRY_AFTER_MAX_MS);
  const doublings = Math.min(Math.max(attempt - 1, 0), 16);
  const windowMs = Math.min(BACKOFF_FIRST_MS * 2 ** doublings, BACKOFF_MAX_MS);
  return Math.floor(random() * windowMs);
}

/** A UUIDv7 (RFC 9562): 48 bits of Unix time in ms, then random bits, so keys sort by time. */
export function uuidv7(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    bytes[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  bytes[6] = (bytes[6]! & 0x0f) | 0x70; // version 7
  bytes[8] = (bytes[8]! & 0x3f) | 0x80; // variant 10
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function projectPath(id: string): string {
  return `/projects/${encodeURIComponent(id)}`;
}

/** The `LifeboatError` for a non-2xx answer, from its problem body if it has one. */
async function refusal(response: Response): Promise<LifeboatError> {
  let problem: Problem | null = null;
  try {
    const parsed: unknown = await response.json();
    if (typeof parsed === "object" && parsed !== null) problem = parsed as Problem;
  } catch {
    // Not JSON (a proxy's HTML page, a cut connection): the status still tells.
  }
  const slug = String(problem?.type ?? "").split("/").pop() ?? "";
  const seconds = response.headers.get("retry-after")?.trim();
  const status = response.status;
  return new LifeboatError({
    kind: "problem",
    status,
    slug,
    title: problem?.title ?? response.statusText,
    detail: problem?.detail ?? "",
    retryAfterMs: seconds && /^\d+$/.test(seconds) ? Number(seconds) * 1000 : null,
    // Statuses that may answer differently soon, as in the Rust SDK: 408, 429, every 5xx.
    // A request with the same key still in flight (`idempotency-key-in-use`) ends soon;
    // retrying then gets its answer replayed.
    transient: status >= 500 || status === 408 || status === 429 || slug === "idempotency-key-in-use",
    problem,
  });
}

/** Waits `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const abort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", abort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", abort, { once: true });
  });
}

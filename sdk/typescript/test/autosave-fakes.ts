/**
 * Fakes for the AutoSaver's unit tests (no server, no browser):
 *
 * - `FakeLifeboat`: projects in memory behind a `fetch` — `GET` (also `?revision=`),
 *   `PUT` with `If-None-Match: *`, `PATCH` (merge patch) with `If-Match`, and
 *   `Idempotency-Key` replay (same key and body: the first answer; another body: 422).
 *   It logs every request, counts saves in flight, and takes scripted answers.
 * - `FakeBrowser`: one origin's shared parts (IndexedDB from fake-indexeddb, Web Locks,
 *   BroadcastChannel, localStorage) and its tabs; a tab can be killed (its locks go, its
 *   channel falls silent) the way a closed or crashed page goes.
 */

import { IDBFactory } from "fake-indexeddb";
import { vi } from "vitest";
import { Client } from "../src/index.js";
import type { AutoSaveOptions, ChannelLike, LockManagerLike, PageLike } from "../src/index.js";

/** One request as the fake server saw it. */
export interface Sent {
  method: string;
  /** Below `/api/v1`, without the query. */
  path: string;
  query: string;
  headers: Headers;
  /** The body text, or null. */
  body: string | null;
  json: unknown;
  keepalive: boolean;
  /** `Date.now()` when it arrived (fake time in these tests). */
  at: number;
  /** The origin of the client that sent it. */
  origin: string;
  /** Which tab's client sent it, if any. */
  tab: string;
  /** The status answered (0 if none yet or none ever). */
  status: number;
}

/** A scripted answer: a response, a network failure, or `lost` — the server does the work, the answer never arrives. */
export type Answer = Reply | "offline" | "lost";

/** An HTTP answer. */
export interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

/** A rule consulted before the model: an answer for the request, or undefined to let the model answer. */
export type Rule = (request: Sent) => Answer | undefined;

interface Project {
  revision: number;
  /** Every revision's state; `history[n - 1]` is revision n. */
  history: unknown[];
}

/** RFC 7396, written apart from `src/merge.ts` so that the tests do not check the code with itself. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return patch;
  const result: Record<string, unknown> =
    typeof target === "object" && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

/** An RFC 9457 problem answer. */
export function problem(status: number, slug: string, detail: string, headers: Record<string, string> = {}): Reply {
  return { status, headers, body: { type: `https://lifeboat.dev/problems/${slug}`, title: slug, status, detail } };
}


export class FakeLifeboat {
  readonly projects = new Map<string, Project>();
  readonly seen: Sent[] = [];
  /** Scripted answers, consulted in order; a rule that answers once removes itself (see `once`). */
  readonly rules: Rule[] = [];
  /** Every request fails as a network failure. */
  offline = false;
  /** Every answer waits this long (fake timers move it). */
  delayMs = 0;
  /** Tabs whose page is gone: their requests never leave (see `FakeTab.kill`). */
  readonly dead = new Set<string>();
  /** Saves (`PUT`, `PATCH`) in flight now, and the most ever, per path. */
  readonly inFlight = new Map<string, number>();
  readonly maxInFlight = new Map<string, number>();
  readonly #receipts = new Map<string, { body: string | null; answer: Reply }>();

  /** A project with `state` at revision 1 (or the revisions `states`). */
  seed(id: string, ...states: unknown[]): void {
    this.projects.set(id, { revision: states.length, history: states });
  }

  /** The current state of project `id`. */
  state(id: string): unknown {
    const project = this.projects.get(id);
    return project?.history[project.revision - 1];
  }

  revision(id: string): number {
    return this.projects.get(id)?.revision ?? 0;
  }

  /** Another writer changes project `id` (a new revision). */
  write(id: string, patch: unknown): void {
    const project = this.projects.get(id)!;
    project.history.push(mergePatch(project.history[project.revision - 1], patch));
    project.revision++;
  }

  /** The `PATCH` requests, in order. */
  patches(): Sent[] {
    return this.seen.filter((request) => request.method === "PATCH");
  }

  /** Adds a rule that answers the first request it matches, then is gone. */
  once(match: (request: Sent) => boolean, answer: Answer): void {
    const rule: Rule = (request) => {
      if (!match(request)) return undefined;
      this.rules.splice(this.rules.indexOf(rule), 1);
      return answer;
    };
    this.rules.push(rule);
  }

  /** A client of this server at `origin`, labelled `tab` in the log. */
  client(origin = "http://lifeboat.test", tab = ""): Client {
    return new Client({ baseUrl: origin, token: "lb_test", fetch: (input, init) => this.#fetch(origin, tab, input, init) });
  }

  async #fetch(origin: string, tab: string, input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> {
    if (this.dead.has(tab)) return new Promise<Response>(() => {});
    const url = new URL(String(input));
    const headers = new Headers(init.headers);
    const body = typeof init.body === "string" ? init.body : null;
    const request: Sent = {
      method: init.method ?? "GET",
      path: url.pathname.replace(/^\/api\/v1/, ""),
      query: url.search.replace(/^\?/, ""),
      headers,
      body,
      json: body === null ? undefined : JSON.parse(body),
      keepalive: init.keepalive ?? false,
      at: Date.now(),
      origin,
      tab,
      status: 0,
    };
    this.seen.push(request);
    const save = request.method === "PATCH" || request.method === "PUT";
    if (save) {
      const now = (this.inFlight.get(request.path) ?? 0) + 1;
      this.inFlight.set(request.path, now);
      this.maxInFlight.set(request.path, Math.max(now, this.maxInFlight.get(request.path) ?? 0));
    }
    let lost = false;
    try {
      if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
      let answer: Answer | undefined;
      for (const rule of [...this.rules]) {
        answer = rule(request);
        if (answer !== undefined) break;
      }
      if (this.offline || answer === "offline") throw new TypeError("fetch failed");
      const given = answer === undefined || answer === "lost" ? this.#answer(request) : answer;
      request.status = given.status;
      if (answer === "lost") {
        lost = true;
        return new Promise<Response>(() => {});
      }
      const response = new Response(given.body === undefined ? null : JSON.stringify(given.body), {
        status: given.status,
        headers: { "content-type": "application/json", ...given.headers },
      });
      Object.defineProperty(response, "url", { value: url.href.replace(/\?.*$/, "") + url.search });
      return response;
    } finally {
      // A lost answer keeps its save "in flight" for good, as a dead page's request would.
      if (save && !lost) this.inFlight.set(request.path, this.inFlight.get(request.path)! - 1);
    }
  }

  /** What the model answers. */
  #answer(request: Sent): Reply {
    const id = decodeURIComponent(request.path.replace(/^\/projects\//, ""));
    const project = this.projects.get(id);
    const key = request.headers.get("idempotency-key");
    const receipt = key === null ? undefined : this.#receipts.get(`${request.method} ${request.path} ${key}`);
    if (receipt) {
      if (receipt.body !== request.body) return problem(422, "idempotency-key-reused", "the key was used with another body");
      return receipt.answer;
    }
    let answer: Reply;
    if (request.method === "GET") {
      if (!project) return problem(404, "not-found", `no project ${id}`);
      const revision = request.query.startsWith("revision=") ? Number(request.query.slice(9)) : project.revision;
      if (revision < 1 || revision > project.revision) return problem(404, "not-found", "no such revision");
      const body = { id, revision, title: null, schema: null, state: project.history[revision - 1], created_at: "", updated_at: "" };
      return { status: 200, body, headers: { etag: `"${revision}"` } };
    } else if (request.method === "PUT") {
      if (project && request.headers.get("if-none-match") === "*") return problem(412, "precondition-failed", "the project exists");
      const state = (request.json as { state: unknown }).state;
      if (project) {
        project.history.push(state);
        project.revision++;
      } else {
        this.projects.set(id, { revision: 1, history: [state] });
      }
      answer = { status: project ? 200 : 201, body: this.#saved(id) };
    } else if (request.method === "PATCH") {
      if (!project) return problem(404, "not-found", `no project ${id}`);
      const ifMatch = request.headers.get("if-match");
      if (ifMatch !== null && ifMatch !== `"${project.revision}"`) {
        return problem(412, "precondition-failed", `If-Match does not match the current revision "${project.revision}"`);
      }
      this.write(id, request.json);
      answer = { status: 200, body: this.#saved(id) };
    } else {
      return problem(405, "method-not-allowed", request.method);
    }
    if (key !== null) this.#receipts.set(`${request.method} ${request.path} ${key}`, { body: request.body, answer });
    return answer;
  }

  #saved(id: string): unknown {
    return { id, revision: this.revision(id), updated_at: "", size_bytes: 0 };
  }
}

/** A `Storage` over a map. */
class FakeStorage {
  readonly items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, String(value));
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
}

/** A window: an event target with `document.visibilityState` and the origin's `localStorage`. */
export class FakeWindow extends EventTarget implements PageLike {
  readonly document = { visibilityState: "visible" };
  constructor(readonly localStorage: FakeStorage) {
    super();
  }
  /** The page is hidden (`visibilitychange`). */
  hide(): void {
    this.document.visibilityState = "hidden";
    this.dispatchEvent(new Event("visibilitychange"));
  }
  /** The page is left (`pagehide`). */
  pagehide(): void {
    this.dispatchEvent(new Event("pagehide"));
  }
}

interface Queued {
  tab: FakeTab;
  grant: () => void;
}

/** One origin in one browser profile: the storage and coordination its tabs share. */
export class FakeBrowser {
  readonly indexedDB = new IDBFactory();
  readonly localStorage = new FakeStorage();
  readonly #held = new Map<string, { tab: FakeTab; token: object }>();
  readonly #queues = new Map<string, Queued[]>();
  readonly channels = new Set<{ name: string; tab: FakeTab; closed: boolean; deliver: (data: unknown) => void }>();
  #tabs = 0;

  /** A new tab; `page: false` for a tab without `window` (Node-like), `locks: false` for one without Web Locks. */
  tab({ page = true, locks = true }: { page?: boolean; locks?: boolean } = {}): FakeTab {
    return new FakeTab(this, `tab${++this.#tabs}`, page, locks);
  }

  /** Lock `name`'s holder, if any. */
  holder(name: string): string | undefined {
    return this.#held.get(name)?.tab.name;
  }

  request(tab: FakeTab, name: string, options: { ifAvailable?: boolean; signal?: AbortSignal }, callback: (lock: unknown) => Promise<unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const grant = (): void => {
        const token = {};
        this.#held.set(name, { tab, token });
        Promise.resolve()
          .then(() => callback({ name, mode: "exclusive" }))
          .then(resolve, reject)
          .finally(() => {
            if (this.#held.get(name)?.token === token) this.#release(name);
          });
      };
      if (!this.#held.has(name)) return grant();
      if (options.ifAvailable) {
        Promise.resolve()
          .then(() => callback(null))
          .then(resolve, reject);
        return;
      }
      const queue = this.#queues.get(name) ?? [];
      this.#queues.set(name, queue);
      const queued: Queued = { tab, grant };
      queue.push(queued);
      options.signal?.addEventListener("abort", () => {
        const at = queue.indexOf(queued);
        if (at >= 0) queue.splice(at, 1);
        reject(new DOMException("withdrawn", "AbortError"));
      });
    });
  }

  #release(name: string): void {
    this.#held.delete(name);
    this.#queues.get(name)?.shift()?.grant();
  }

  /** The tab is gone: its locks are released, its queued requests dropped, its channels silent. */
  kill(tab: FakeTab): void {
    for (const queue of this.#queues.values()) {
      for (let i = queue.length - 1; i >= 0; i--) if (queue[i]!.tab === tab) queue.splice(i, 1);
    }
    for (const [name, held] of this.#held) if (held.tab === tab) this.#release(name);
    for (const channel of this.channels) if (channel.tab === tab) channel.closed = true;
  }
}

/** A tab: its Web Locks, BroadcastChannel class and window, as AutoSaver options. */
export class FakeTab {
  readonly window: FakeWindow | undefined;
  readonly locks: LockManagerLike | undefined;
  readonly BroadcastChannel: new (name: string) => ChannelLike;

  constructor(
    readonly browser: FakeBrowser,
    readonly name: string,
    page: boolean,
    locks: boolean,
  ) {
    this.window = page ? new FakeWindow(browser.localStorage) : undefined;
    this.locks = locks ? { request: (lockName, options, callback) => browser.request(this, lockName, options, callback) } : undefined;
    const tab = this;
    this.BroadcastChannel = class implements ChannelLike {
      onmessage: ((event: { data: unknown }) => void) | null = null;
      readonly #entry;
      constructor(name: string) {
        this.#entry = { name, tab, closed: false, deliver: (data: unknown) => this.onmessage?.({ data }) };
        browser.channels.add(this.#entry);
      }
      postMessage(message: unknown): void {
        if (this.#entry.closed) return;
        const data = structuredClone(message);
        for (const other of browser.channels) {
          if (other !== this.#entry && other.name === this.#entry.name) {
            // Asynchronous, as a real channel is; checked again on arrival.
            queueMicrotask(() => {
              if (!other.closed) other.deliver(structuredClone(data));
            });
          }
        }
      }
      close(): void {
        this.#entry.closed = true;
        browser.channels.delete(this.#entry);
      }
    };
  }

  /** The AutoSaver options of this tab (plus `more`). */
  options(more: AutoSaveOptions = {}): AutoSaveOptions {
    const options: AutoSaveOptions = { indexedDB: this.browser.indexedDB, BroadcastChannel: this.BroadcastChannel, ...more };
    if (this.locks) options.locks = this.locks;
    if (this.window) options.window = this.window;
    return options;
  }

  kill(): void {
    this.browser.kill(this);
  }
}

/** Lets IndexedDB (which runs on real `setImmediate`) and promise chains run; fake time stands still. */
export async function settle(rounds = 25): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Moves fake time on by `ms`, in steps, letting IndexedDB run after each. */
export async function elapse(ms: number, stepMs = 50): Promise<void> {
  for (let t = 0; t < ms; t += stepMs) {
    await vi.advanceTimersByTimeAsync(Math.min(stepMs, ms - t));
    await settle();
  }
}

/** Moves fake time on until `promise` settles; resolves or rejects as it does. */
export async function drive<T>(promise: Promise<T>, maxMs = 60_000): Promise<T> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await settle();
  await until(() => settled, maxMs);
  return promise;
}

/** Moves fake time on until `done()` holds (at most `maxMs`); fails otherwise. */
export async function until(done: () => boolean, maxMs = 60_000, stepMs = 50): Promise<void> {
  for (let t = 0; !done(); t += stepMs) {
    if (t > maxMs) throw new Error(`not done after ${maxMs} ms of fake time`);
    await elapse(stepMs, stepMs);
  }
}

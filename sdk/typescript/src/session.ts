/**
 * Sessions from a worker's side (a Node ≥ 20 process or an in-page recorder): start or
 * resume, heartbeat in the background, checkpoint, upload and append assets, finish —
 * and stop as soon as the lease is lost.
 *
 * It mirrors the Rust SDK (`crates/lifeboat-sdk/src/session.rs`): the same heartbeat
 * cadence (`heartbeat_timeout_ms / 4`), the same fencing refusals, the same decisions in
 * `resumeOrStart`. Every write names the handle's attempt, so once another worker has
 * recovered the session, nothing this one still sends can overwrite its work.
 *
 * @module
 */

import type { components } from "./api.js";
import {
  type CallOptions,
  type Client,
  LifeboatError,
  type RequestOptions,
  sleep,
  uuidv7,
} from "./client.js";
import {
  type CheckpointBody,
  type RecoveryBody,
  type RecoveryOption,
  type SessionBody,
  getRecovery,
  recover,
  sessionPath,
} from "./recovery-api.js";

/** An asset as `PUT`, an append and the asset list answer it. */
export type AssetBody = components["schemas"]["AssetBody"];

/** The shortest heartbeat interval, so that a tiny timeout cannot become a request storm (the Rust SDK's floor). */
export const HEARTBEAT_INTERVAL_MIN_MS = 50;
/** How often `resumeOrStart` reads again a session that is still `active`. */
const ACTIVE_POLL_MS = 200;
/** How long past one heartbeat timeout `resumeOrStart` waits for an `active` session's lease to run out. */
const ACTIVE_MARGIN_MS = 5_000;
/** The page size used to find an asset's size (the server's maximum). */
const ASSET_PAGE_LIMIT = 1000;
/** Refusals (409) which mean this worker's attempt no longer owns the session (401 too: see `isFenced`). */
const FENCED_SLUGS = ["attempt-mismatch", "lease-expired", "session-not-active"];

/** A session to create: the fields of `POST /sessions`. */
export interface NewSession {
  /** Its id (the server makes one if none is given; resuming needs one). */
  id?: string;
  /** What kind of work (`render`, `recording`, …). */
  kind: string;
  /** The project it works for. */
  projectId?: string;
  /** A label for people (the recovery prompt shows it). */
  title?: string;
  /** How long without a heartbeat before it counts as crashed: 1000–86,400,000 ms, default 30,000. */
  heartbeatTimeoutMs?: number;
  /** Flag it `stalled` when its progress does not move for this long (≥ 1000 ms). */
  stallTimeoutMs?: number;
  /** Recovering past this many attempts needs confirmation (default 10). */
  maxAttempts?: number;
  /** The total units of work, for progress and work-lost figures. */
  totalUnits?: number;
  /** Prunable checkpoints kept, 1–1000 (default 5). */
  checkpointRetention?: number;
  /** Any JSON the application wants kept with the session. */
  metadata?: unknown;
}

/** The kinds a worker writes (`emergency` is written by `fail`). */
export type CheckpointKind = "item" | "batch" | "stage" | "milestone" | "manual";

/** A checkpoint to write: its kind and data, and optionally where the work stands. */
export interface Checkpoint {
  /** `item` (kept within retention), `batch` (where `restart_batch` restarts), `stage` (kept for the session's life), … */
  kind: CheckpointKind;
  /** Any JSON value; stored byte for byte as `JSON.stringify` makes it. */
  data?: unknown;
  /** The stage name (for `stage` checkpoints; allowed on any). */
  stage?: string;
  /** Where in the input the work stands (a cursor, an offset…): any JSON value. */
  position?: unknown;
  /** Units of work finished at this point. */
  completedUnits?: number;
  /** Units of work in all. */
  totalUnits?: number;
  /**
   * Assets this checkpoint needs. The server pins their versions as they are now (later
   * writes to the names do not change what it refers to; `pinnedAsset` reads them back),
   * and a recovery offers the checkpoint only while those bytes are intact.
   */
  assets?: string[];
}

/** What identifies a held session: a session object (`POST /sessions`, a recovery) has these fields. */
export type SessionRef = Pick<SessionBody, "id" | "attempt" | "heartbeat_timeout_ms">;

/** Bytes to upload or append. */
export type Bytes = Blob | ArrayBuffer | ArrayBufferView;

/** What `resumeOrStart` found. */
export type ResumeOrStart =
  /** There was no such session: it is started, at attempt 1. */
  | { status: "started"; handle: SessionHandle; resumed: null }
  /** It had crashed (or was paused or failed): it is recovered at a new attempt. */
  | { status: "recovered"; handle: SessionHandle; resumed: Resumed }
  /** It is already completed or cancelled: nothing to do. */
  | { status: "finished"; handle: null; resumed: null; session: SessionBody };

/** How a session was recovered by `resumeOrStart`. */
export interface Resumed {
  /** The checkpoint to continue from; null: from the beginning. */
  from: CheckpointBody | null;
  /** The option used (`continue` falls back to `fresh_start` when no checkpoint verifies). */
  option: RecoveryOption;
  /** What the server offered before recovering (confidence, work lost, options). */
  assessment: RecoveryBody;
}

/** What `resumeOrStart` takes besides the session. */
export interface ResumeOrStartOptions extends NewSession {
  /** The session to continue or start. */
  id: string;
  /** How to continue a crashed session; `continue` by default. */
  option?: RecoveryOption;
  /** Cancels the wait for an `active` session and the requests. */
  signal?: AbortSignal;
}

/**
 * A session this worker holds. It heartbeats every `heartbeatTimeoutMs / 4` (a timer that
 * never keeps a Node process alive on its own; a failed heartbeat is simply sent again at
 * the next tick, with the latest progress) until it is completed, failed or stopped.
 *
 * When the server fences this worker (409 `lease-expired`, `attempt-mismatch` or
 * `session-not-active`: the lease ran out, or another worker recovered the session; a 401:
 * a session token whose session is finished or purged; a 404 to a heartbeat: the session
 * is gone), heartbeats stop, `leaseLost` resolves and `onLeaseLost` callbacks run, once; later
 * checkpoints, uploads and appends are refused without a request. Stop working then.
 */
export class SessionHandle {
  /** The session id. */
  readonly id: string;
  /** The attempt this worker holds; every write names it. */
  readonly attempt: number;
  /** The session's lease length. */
  readonly heartbeatTimeoutMs: number;
  /** Resolves when the server fences this worker. */
  readonly leaseLost: Promise<void>;

  readonly #client: Client;
  /** The `progress` of the next heartbeat, or null for none. */
  #progress: Record<string, unknown> | null = null;
  /** Known sizes of appendable assets: where the next append without an offset goes. */
  readonly #sizes = new Map<string, number>();
  readonly #lostCallbacks = new Set<() => void>();
  #resolveLost!: () => void;
  /** The refusal that fenced this worker; null while it holds the session. */
  #lostBy: LifeboatError | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;
  /** The heartbeat still waiting for its answer, and when it was sent. */
  #pending: { abort: AbortController; sentAtMs: number } | null = null;
  /** The time between heartbeats. */
  readonly #everyMs: number;

  /** Holds `session` and starts heartbeating (the first one at once if `beatNow`). Prefer `startSession`, `resumeOrStart` or `attachSession`. */
  constructor(client: Client, session: SessionRef, beatNow = false) {
    this.#client = client;
    this.id = session.id;
    this.attempt = session.attempt;
    this.heartbeatTimeoutMs = session.heartbeat_timeout_ms;
    this.leaseLost = new Promise((resolve) => {
      this.#resolveLost = resolve;
    });
    this.#everyMs = Math.max(Math.floor(this.heartbeatTimeoutMs / 4), HEARTBEAT_INTERVAL_MIN_MS);
    const timer = setInterval(() => void this.#heartbeat(), this.#everyMs);
    // Node: the heartbeat alone never keeps the process alive. Browsers answer a number.
    if (typeof timer === "object" && timer !== null && "unref" in timer) (timer as { unref(): void }).unref();
    this.#timer = timer;
    if (beatNow) void this.#heartbeat();
  }

  /** Whether the server has fenced this worker. */
  get isLeaseLost(): boolean {
    return this.#lostBy !== null;
  }

  /** Whether heartbeats are still being sent. */
  get isHeartbeating(): boolean {
    return this.#timer !== null;
  }

  /**
   * Runs `callback` once when the server fences this worker (at once, asynchronously, if it
   * already has). Answers a function that removes the callback.
   */
  onLeaseLost(callback: () => void): () => void {
    if (this.#lostBy !== null) {
      queueMicrotask(callback);
      return () => {};
    }
    const once = (): void => callback();
    this.#lostCallbacks.add(once);
    return () => void this.#lostCallbacks.delete(once);
  }

  /** The progress the next heartbeats report (checkpoints that carry units or a stage update it too). */
  setProgress(completedUnits: number, stage?: string): void {
    this.#progress = stage === undefined ? { completed_units: completedUnits } : { completed_units: completedUnits, stage };
  }

  /**
   * Writes a checkpoint (it is also a heartbeat) and answers its `seq`. Retried with one
   * `Idempotency-Key`, so a retry never makes two.
   */
  async checkpoint(checkpoint: Checkpoint, options: CallOptions = {}): Promise<number> {
    this.#refuseIfLost();
    const created = await this.#json<{ seq: number }>("POST", "/checkpoints", {
      ...options,
      json: { attempt: this.attempt, ...snakeCase(checkpoint) },
      idempotencyKey: options.idempotencyKey ?? uuidv7(),
    });
    // The server's progress moved with the checkpoint; the next heartbeat must not move it back.
    if (checkpoint.completedUnits !== undefined || checkpoint.stage !== undefined) {
      this.#progress = { ...this.#progress, ...snakeCase({ completedUnits: checkpoint.completedUnits, stage: checkpoint.stage }) };
    }
    return created.seq;
  }

  /**
   * Writes the checkpoint `make` builds when `completed` is a multiple of `every` ("an item
   * checkpoint every 10 items"), with `completedUnits: completed`; answers its `seq`, or
   * null when it wrote none.
   */
  async checkpointEvery(every: number, completed: number, make: () => Checkpoint): Promise<number | null> {
    if (every <= 0 || completed % every !== 0) return null;
    return this.checkpoint({ ...make(), completedUnits: completed });
  }

  /** Completes the session; heartbeats stop (they go on if it failed, so that it can be sent again). */
  async complete(options: CallOptions = {}): Promise<SessionBody> {
    return this.#finish("/complete", { attempt: this.attempt }, options);
  }

  /**
   * Fails the session with `error` (recorded as its crash: the text decides its type, SPEC §9),
   * optionally with an emergency checkpoint; heartbeats stop (they go on if it failed).
   */
  async fail(error: string, emergency?: Omit<Checkpoint, "kind">, options: CallOptions = {}): Promise<SessionBody> {
    const body = emergency === undefined ? {} : { checkpoint: snakeCase(emergency) };
    return this.#finish("/fail", { attempt: this.attempt, error, ...body }, options);
  }

  /** Stops heartbeating without telling the server: the lease runs out and the session becomes `incomplete`. */
  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    this.#pending?.abort.abort();
    this.#pending = null;
  }

  /** Uploads a whole asset (replacing one of that name), fenced by this attempt. Retried: the same bytes are safe to send again. */
  async upload(name: string, bytes: Bytes, options: CallOptions = {}): Promise<AssetBody> {
    this.#refuseIfLost();
    const asset = await this.#json<AssetBody>("PUT", `${assetPath(name)}?attempt=${this.attempt}`, {
      ...options,
      body: bytes as BodyInit,
      contentType: "application/octet-stream",
      retry: true,
    });
    this.#sizes.set(name, asset.size);
    return asset;
  }

  /**
   * Appends `bytes` at `offset` of an appendable asset, fenced by this attempt, and answers
   * its new size. Without `offset` it appends where the last append of this handle ended,
   * or at the size the server reports.
   *
   * A retry whose first try already landed is answered 200 by the server (the bytes are
   * there, byte for byte), so a 409 `offset-mismatch` means the stored bytes differ from
   * the ones sent; it is thrown, never taken for success. The one exception is a chunk
   * the stored bytes end inside of (a larger chunk re-sent from the same offset after an
   * unanswered append): the overlap is read back, and only when it is the same bytes
   * does the rest go on at the real size.
   */
  async append(name: string, bytes: Bytes, offset?: number, options: CallOptions = {}): Promise<number> {
    this.#refuseIfLost();
    let chunk = await toUint8Array(bytes);
    let at = offset ?? this.#sizes.get(name) ?? (await this.assetSize(name, options));
    for (let retried = false; ; retried = true) {
      try {
        const asset = await this.#json<AssetBody>("POST", `${assetPath(name)}?offset=${at}&attempt=${this.attempt}`, {
          ...options,
          body: chunk as Uint8Array<ArrayBuffer>,
          contentType: "application/octet-stream",
          retry: true,
        });
        this.#sizes.set(name, asset.size);
        return asset.size;
      } catch (error) {
        if (!(error instanceof LifeboatError && error.slug === "offset-mismatch")) throw error;
        const current = error.problem?.current_size ?? (await this.assetSize(name, options));
        this.#sizes.set(name, current);
        const overlap = current - at;
        const inside = !retried && overlap > 0 && overlap < chunk.length;
        if (!inside || !equalBytes(await this.#storedBytes(name, at, current, options), chunk.subarray(0, overlap))) throw error;
        chunk = chunk.subarray(overlap);
        at = current;
      }
    }
  }

  /** The size of an asset so far (0 if it does not exist yet): where appends resume. */
  async assetSize(name: string, options: CallOptions = {}): Promise<number> {
    let cursor: string | null | undefined = null;
    do {
      const query: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const page = await this.#json<{ items: AssetBody[]; next_cursor?: string | null }>(
        "GET",
        `/assets?limit=${ASSET_PAGE_LIMIT}${query}`,
        options,
      );
      const found = page.items.find((asset) => asset.name === name);
      if (found) return found.size;
      cursor = page.next_cursor;
    } while (cursor);
    return 0;
  }

  /**
   * The bytes of asset `name` as checkpoint `seq` pinned them: what a resumed worker
   * continues from, whatever was written to that name since.
   */
  async pinnedAsset(seq: number, name: string, options: CallOptions = {}): Promise<Uint8Array> {
    const response = await this.#request("GET", `/checkpoints/${seq}${assetPath(name)}`, options);
    return new Uint8Array(await response.arrayBuffer());
  }

  /** Bytes `from`…`to` (exclusive) of the asset as it is now. */
  async #storedBytes(name: string, from: number, to: number, options: CallOptions): Promise<Uint8Array> {
    const headers = { ...options.headers, range: `bytes=${from}-${to - 1}` };
    const response = await this.#request("GET", assetPath(name), { ...options, headers });
    const bytes = new Uint8Array(await response.arrayBuffer());
    // A 200 is the whole file (a server or proxy that ignored the range).
    return response.status === 206 ? bytes : bytes.subarray(from, to);
  }

  /** Finishes the session. Heartbeats stop only once it answered: after a failure the lease is kept while the caller tries again. */
  async #finish(rest: string, json: object, options: CallOptions): Promise<SessionBody> {
    const finished = await this.#json<SessionBody>("POST", rest, { ...options, json, idempotencyKey: options.idempotencyKey ?? uuidv7() });
    this.stop();
    return finished;
  }

  /**
   * Sends one heartbeat. One still unanswered is left alone while it is younger than two
   * intervals (a slow server is still extending the lease; aborting it would leave none
   * arriving), and replaced once older (a hung connection must not stop the heartbeats).
   */
  async #heartbeat(): Promise<void> {
    const nowMs = Date.now();
    if (this.#pending !== null && nowMs - this.#pending.sentAtMs < 2 * this.#everyMs) return;
    this.#pending?.abort.abort();
    const pending = { abort: new AbortController(), sentAtMs: nowMs };
    this.#pending = pending;
    const json = this.#progress === null ? { attempt: this.attempt } : { attempt: this.attempt, progress: this.#progress };
    try {
      await this.#client.requestOnce("POST", `${sessionPath(this.id)}/heartbeat`, { json, signal: pending.abort.signal });
    } catch (error) {
      // Fenced (or the session gone: 404): stop. Anything else is a blip; the next tick tries again.
      this.#lose(error, true);
    } finally {
      if (this.#pending === pending) this.#pending = null;
    }
  }

  async #request(method: string, rest: string, options: RequestOptions): Promise<Response> {
    try {
      return await this.#client.request(method, `${sessionPath(this.id)}${rest}`, options);
    } catch (error) {
      this.#lose(error);
      throw error;
    }
  }

  async #json<T>(method: string, rest: string, options: RequestOptions): Promise<T> {
    const response = await this.#request(method, rest, options);
    return (await response.json()) as T;
  }

  /** Takes a fencing refusal as the loss of the lease: stop heartbeating and tell, once. */
  #lose(error: unknown, heartbeat?: boolean): void {
    if (this.#lostBy !== null || !isFenced(error, heartbeat)) return;
    this.#lostBy = error;
    this.stop();
    this.#resolveLost();
    for (const callback of this.#lostCallbacks) {
      try {
        callback();
      } catch (thrown) {
        // One callback's bug must not keep the others from running; report it as uncaught.
        queueMicrotask(() => {
          throw thrown;
        });
      }
    }
    this.#lostCallbacks.clear();
  }

  /** A write after the loss would be refused (or worse, land in a session another worker owns): refuse it here. */
  #refuseIfLost(): void {
    // The refusal that fenced this worker answers every write after it.
    if (this.#lostBy !== null) throw this.#lostBy;
  }
}

/** Starts a session (`POST /sessions`, retried with one `Idempotency-Key`) and holds it. */
export async function startSession(client: Client, session: NewSession, options: CallOptions = {}): Promise<SessionHandle> {
  const created = await client.json<SessionBody>("POST", "/sessions", {
    ...options,
    json: snakeCase(session),
    idempotencyKey: options.idempotencyKey ?? uuidv7(),
  });
  return new SessionHandle(client, created);
}

/**
 * Holds a session that someone else started (e.g. an application's server that made the
 * session and a session token `lbs_…` for this page): the first heartbeat goes at once
 * (the session may have been made a while ago), then every `heartbeat_timeout_ms / 4`.
 */
export function attachSession(client: Client, session: SessionRef): SessionHandle {
  return new SessionHandle(client, session, true);
}

/** `GET /sessions/{id}`; null when there is no such session. */
export async function getSession(client: Client, id: string, options: CallOptions = {}): Promise<SessionBody | null> {
  try {
    return await client.json<SessionBody>("GET", sessionPath(id), options);
  } catch (error) {
    if (error instanceof LifeboatError && error.status === 404) return null;
    throw error;
  }
}

/**
 * Continues the session `session.id` names if it exists, or starts it (the Rust SDK's
 * `resume_or_start`):
 * - absent: started;
 * - `completed` or `cancelled`: finished, nothing to do;
 * - `active` (its worker just died): read again every 200 ms until its lease runs out and
 *   the server records the crash, for at most one heartbeat timeout and 5 s; still active
 *   then, another worker holds it, and this rejects;
 * - `incomplete`, `failed` or `paused`: recovered with `option` (`continue` by default, which
 *   falls back to `fresh_start`, confirmed, when no checkpoint verifies).
 */
export async function resumeOrStart(client: Client, session: ResumeOrStartOptions): Promise<ResumeOrStart> {
  const { option = "continue", signal, ...fields } = session;
  const call: CallOptions = signal === undefined ? {} : { signal };
  let found = await getSession(client, fields.id, call);
  if (found === null) return { status: "started", handle: await startSession(client, fields, call), resumed: null };
  const deadlineMs = Date.now() + found.heartbeat_timeout_ms + ACTIVE_MARGIN_MS;
  while (found.status === "active" && Date.now() < deadlineMs) {
    await sleep(ACTIVE_POLL_MS, signal);
    found = await getSession(client, fields.id, call);
    if (found === null) throw new Error(`session ${fields.id} disappeared while waiting for its lease to run out`);
  }
  if (found.status === "completed" || found.status === "cancelled") {
    return { status: "finished", handle: null, resumed: null, session: found };
  }
  if (found.status === "active") throw new Error(`session ${fields.id} is still active: another worker holds it`);
  const assessment = await getRecovery(client, fields.id, call);
  const chosen: RecoveryOption = option === "continue" && !assessment.can_recover ? "fresh_start" : option;
  const recovered = await recover(client, fields.id, chosen, { ...call, confirm: chosen === "fresh_start" });
  return {
    status: "recovered",
    handle: new SessionHandle(client, recovered.session),
    resumed: { from: recovered.resume_from ?? null, option: chosen, assessment },
  };
}

/**
 * Whether `error` means this attempt no longer holds the session: a fencing 409; a 401 (a
 * session token, `lbs_…`, is refused once its session is finished or purged, e.g. discarded
 * from the recovery prompt); and, answering a heartbeat, a 404 (the session is gone).
 */
function isFenced(error: unknown, heartbeat?: boolean): error is LifeboatError {
  if (!(error instanceof LifeboatError)) return false;
  const { status } = error;
  return status === 401 || (heartbeat === true && status === 404) || (status === 409 && FENCED_SLUGS.includes(error.slug));
}

/**
 * The wire form of an options object: its top-level names in snake_case (`projectId` →
 * `project_id`), undefined members left out. Values (`data`, `metadata`) are sent as given.
 */
function snakeCase(fields: object): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(fields)
      .filter(([, value]) => value !== undefined)
      .map(([name, value]) => [name.replace(/[A-Z]/g, (upper) => `_${upper.toLowerCase()}`), value]),
  );
}

/** `/assets/{name}`: each segment of the name encoded, the slashes kept (names are paths, SPEC §5). */
function assetPath(name: string): string {
  return `/assets/${name.split("/").map(encodeURIComponent).join("/")}`;
}

async function toUint8Array(bytes: Bytes): Promise<Uint8Array> {
  if (bytes instanceof Blob) return new Uint8Array(await bytes.arrayBuffer());
  if (ArrayBuffer.isView(bytes)) return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return new Uint8Array(bytes);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}


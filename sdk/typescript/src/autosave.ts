/**
 * The AutoSaver: edits of a project's state (merge patches) go first into an IndexedDB
 * outbox, then to the server after a quiet spell (`debounceMs`, 2 s) or at the latest
 * `maxWaitMs` (10 s) after the first unsent edit.
 *
 * It follows the Rust SDK (`crates/lifeboat-sdk/src/autosave.rs`): patches are combined
 * by the same `coalesce` rule; a save is sealed with an `Idempotency-Key` (UUIDv7) and
 * `If-Match`, and keeps both until the server answers, so a retry — even from the next
 * page load — is replayed by the server rather than saved twice; a 412 re-reads the
 * project, notes the fields both sides changed, and sends the patch again on top under
 * a new key; a refusal of the patch itself (400, 409 `patch-conflict`, 413, 415, 422)
 * drops it, and every other failure keeps it and tries again.
 *
 * Browser parts: one tab per document saves (the holder of a Web Lock; without Web Locks,
 * every tab); the others write to the same outbox and wake it over a `BroadcastChannel`.
 * When the page is hidden or left, the next save (the sealed one, or the leading records
 * that combine) is sent with `fetch(…, {keepalive: true})` if it fits the keepalive budget
 * and none is on the wire, after a synchronous `localStorage` marker that lets the next
 * load resend it under the same key.
 *
 * @module
 */

import { type Client, LifeboatError, type ProjectBody, type ProjectSaved, backoffMs, uuidv7 } from "./client.js";
import { type LockManagerLike, elect } from "./leader.js";
import { type JsonObject, applyPatch, at, coalesce, isObject, same, touched } from "./merge.js";
import { type OutboxRecord, committed, findDoc, keepDoc, load, openOutbox, records, result, write } from "./outbox.js";

export type { LockManagerLike } from "./leader.js";
export type { JsonObject } from "./merge.js";

/** What the auto-saver is doing. */
export type SaveState = "idle" | "saving" | "saved" | "offline" | "conflict" | "error";

/** The auto-saver's status; every tab of a document shows the saving tab's. */
export interface SaveStatus {
  /**
   * `idle`: edits wait for the debounce; `saving`: a save is on its way; `saved`: the
   * last save landed; `offline`: the server cannot be reached, saving goes on trying;
   * `conflict`: a save landed on top of another writer's change to the same fields
   * (`conflicts`), until `clearConflicts()`; `error`: the server refused a save (its
   * edits are dropped) or answers with errors (saving goes on trying), see `error`.
   */
  state: SaveState;
  /** Edits not yet acknowledged by the server, counted from the outbox. */
  pending: number;
  /** The project's revision after the newest acknowledged save. */
  revision: number;
  /** JSON Pointers of fields another writer changed while this one had unsaved edits to them; this writer's edit was applied on top. */
  conflicts: string[];
  /** Why the state is `error`: the problem's detail; null otherwise. */
  error: string | null;
  /** Whether this tab is the one that saves the document. */
  leader: boolean;
}

/** The page's events and storage, as the AutoSaver uses them; `globalThis` (the window) by default. */
export interface PageLike {
  addEventListener(type: string, listener: () => void, capture?: boolean): void;
  removeEventListener(type: string, listener: () => void, capture?: boolean): void;
  document?: { visibilityState: string };
  localStorage?: Pick<Storage, "getItem" | "setItem" | "removeItem">;
}

/** The part of a `BroadcastChannel` the AutoSaver uses. */
export interface ChannelLike {
  postMessage(message: unknown): void;
  close(): void;
  onmessage: ((event: { data: unknown }) => void) | null;
}

/** How an AutoSaver saves; every field is optional. */
export interface AutoSaveOptions {
  /** Save after this long without a new edit (2000 ms). */
  debounceMs?: number;
  /** Save at the latest this long after the first unsent edit, even while edits keep coming (10,000 ms). */
  maxWaitMs?: number;
  /** The IndexedDB database ("lifeboat"). */
  dbName?: string;
  /** The largest body sent with `fetch(keepalive)` when the page is left (61,440 B; browsers allow 64 KiB for all keepalive bodies in flight). */
  keepaliveBytes?: number;
  /** The IndexedDB to use (`globalThis.indexedDB`). */
  indexedDB?: IDBFactory;
  /** The Web Locks to elect the saving tab with (`navigator.locks`; without any, this saver saves). */
  locks?: LockManagerLike;
  /** The `BroadcastChannel` class to wake the saving tab with (`globalThis.BroadcastChannel`). */
  BroadcastChannel?: new (name: string) => ChannelLike;
  /** The page: `pagehide` and `visibilitychange` events, `document.visibilityState`, `localStorage` (`globalThis`). */
  window?: PageLike;
}

const DEBOUNCE_MS = 2_000;
const MAX_WAIT_MS = 10_000;
/** 60 KiB: room under the browser's 64 KiB keepalive budget for the headers and another small request. */
const KEEPALIVE_BYTES = 61_440;
/**
 * How long a tab that takes over a document waits, after a previous tab sent a save with
 * keepalive, before sending it again under the same key: the first is most likely still
 * arriving, and two requests with one key in flight make the server answer 409.
 */
const KEEPALIVE_GRACE_MS = 2_000;
/**
 * How far short of its due time (on `Date.now()`) a timer may fire and still be armed
 * again: timers run on a monotonic clock, `Date.now()` on the wall clock, which is coarser
 * and may be slewed. A larger gap is the wall clock stepped back, and the timer's wait stands.
 */
const EARLY_TIMER_MS = 50;

/** A save: the leading outbox records it combines, as one patch, its key and revision. */
interface Save {
  ids: number[];
  patch: JsonObject;
  key: string;
  revision: number;
  edits: number;
}

/** The save being made, and the IndexedDB write that seals it. */
interface Sealed extends Save {
  persisted: Promise<unknown>;
}

/** What `localStorage` keeps of a save sent at page exit: the save itself, and when. */
interface Marker extends Save {
  at: number;
}

interface Waiter {
  resolve: () => void;
  reject: (error: Error) => void;
}

/** What tabs of one document tell each other. */
type Message =
  | { t: "edit" | "hello" | "clear" | "leader" }
  | { t: "flush"; id: string }
  | { t: "flushed"; id: string; error?: string }
  | { t: "status"; status: SaveStatus };

/** Auto-saves one project. See the module documentation. */
export class AutoSaver {
  readonly #client: Client;
  readonly #path: string;
  /** The document key: the project's URL. */
  readonly #doc: string;
  readonly #db: IDBDatabase;
  readonly #name: string;
  readonly #debounceMs: number;
  readonly #maxWaitMs: number;
  readonly #keepaliveBytes: number;
  readonly #page: PageLike | undefined;
  #channel: ChannelLike | undefined;

  /** The server's state at `#revision`, as far as this tab knows. */
  #base: unknown;
  #revision: number;
  /** `#base` with every pending edit applied. */
  #state: unknown;
  /** Edits of this tab handed to IndexedDB but not yet placed in `#mirror`. */
  #undecided: JsonObject[] = [];

  #leader = false;
  #closed = false;
  /** Leader: the document's outbox records, in order, as they are once this tab's writes commit. */
  #mirror: OutboxRecord[] = [];
  /** Leader: the highest record id seen, to tell other tabs' new records. */
  #seen = 0;
  /** Leader: the save being made (the first outbox record, sealed). */
  #sealed: Sealed | null = null;
  /** Leader: a save is being made (sealed, waiting for its seal to commit, or on the wire). */
  #inFlight = false;
  /** Leader: its request is on the wire. */
  #fetching = false;
  /** Leader: numbers the attempts, so a keepalive send at page exit supersedes one still waiting for its seal. */
  #attempts = 0;
  #firstEditAt: number | null = null;
  #lastEditAt: number | null = null;
  #tries = 0;
  #retryAt: number | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;

  #activity: Exclude<SaveState, "conflict"> = "idle";
  #error: string | null = null;
  #conflicts: string[] = [];
  /** Follower: the pending count, from the leader's status and this tab's own edits. */
  #pending = 0;
  /** Follower: the revision the leader's status names (`#revision` stays that of `#base`). */
  #shownRevision: number;
  #status: SaveStatus;
  #listeners = new Set<(status: SaveStatus) => void>();
  /** Leader: flushes of this tab, and of other tabs (by request id), waiting for an empty outbox. */
  #waiters: Waiter[] = [];
  #asked: string[] = [];
  /** Follower: its flushes, waiting for the leader's answer. */
  #remote = new Map<string, Waiter>();
  #writes: Promise<unknown> = Promise.resolve();
  #release: () => void = () => {};
  #abort = new AbortController();

  private constructor(client: Client, path: string, doc: string, db: IDBDatabase, base: unknown, revision: number, options: AutoSaveOptions) {
    this.#client = client;
    this.#path = path;
    this.#doc = doc;
    this.#db = db;
    this.#name = `${options.dbName ?? "lifeboat"}:${doc}`;
    this.#debounceMs = options.debounceMs ?? DEBOUNCE_MS;
    this.#maxWaitMs = options.maxWaitMs ?? MAX_WAIT_MS;
    this.#keepaliveBytes = options.keepaliveBytes ?? KEEPALIVE_BYTES;
    const page = options.window ?? (globalThis as unknown as PageLike);
    this.#page = typeof page.addEventListener === "function" ? page : undefined;
    this.#base = this.#state = base;
    this.#revision = this.#shownRevision = revision;
    this.#status = this.#compose();
  }

  /**
   * Opens the auto-saver of project `id`: reads the project (creating it empty with
   * `If-None-Match: *` if there is none), or — when the server cannot be reached — takes
   * the state this browser last knew; then counts what earlier tabs left in the outbox
   * and, if this tab saves the document, starts sending it.
   */
  static async open(client: Client, id: string, options: AutoSaveOptions = {}): Promise<AutoSaver> {
    const factory = options.indexedDB ?? globalThis.indexedDB;
    if (!factory) throw new TypeError("the AutoSaver needs IndexedDB: pass options.indexedDB");
    const path = `/projects/${encodeURIComponent(id)}`;
    const db = await openOutbox(factory, options.dbName ?? "lifeboat");
    let offline = false;
    let project: { doc: string; revision: number; state: unknown };
    try {
      try {
        project = await readProject(client, path, false);
      } catch (error) {
        if (!(error instanceof LifeboatError && error.transient)) throw error;
        const known = await findDoc(db, docKey(client, path));
        if (known) {
          project = known;
          offline = error.kind === "offline";
        } else {
          project = await readProject(client, path, true); // Never seen here: wait for the server.
        }
      }
      await keepDoc(db, project);
    } catch (error) {
      db.close();
      throw error;
    }
    const saver = new AutoSaver(client, path, project.doc, db, project.state, project.revision, options);
    if (offline) saver.#activity = "offline";
    await saver.#start(options);
    return saver;
  }

  /** The status now. */
  get status(): SaveStatus {
    return this.#status;
  }

  /** The document as this tab knows it: the server's state with the pending edits applied. Treat it as read-only. */
  get state(): unknown {
    return this.#state;
  }

  /** Calls `listener` on every change of the status; returns a function that stops it. */
  onStatus(listener: (status: SaveStatus) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /**
   * Records an edit: a merge patch (RFC 7396) of the project's state. Resolves once the
   * edit is in IndexedDB, from where it is saved even if this page goes away.
   */
  async edit(patch: JsonObject): Promise<void> {
    if (this.#closed) throw new Error("the AutoSaver is closed");
    if (!isObject(patch)) throw new TypeError("an edit is a merge patch: a JSON object");
    const edit = JSON.parse(JSON.stringify(patch)) as JsonObject;
    this.#state = applyPatch(this.#state, edit);
    // The transaction is made before any await, so edits reach IndexedDB in call order.
    const tx = this.#db.transaction("outbox", "readwrite");
    const outbox = tx.objectStore("outbox");
    let done: Promise<unknown>;
    if (this.#leader) {
      this.#undecided.push(edit);
      done = Promise.all([this.#place(outbox, edit), committed(tx)]);
    } else {
      outbox.add({ doc: this.#doc, patch: edit, edits: 1 });
      done = committed(tx).then(() => {
        this.#pending++;
        this.#publish();
        this.#post({ t: "edit" });
      });
    }
    this.#writes = Promise.all([this.#writes, done.catch(() => {})]);
    await done;
  }

  /** Sends what is pending now; resolves when the server has acknowledged all of it, rejects if it refused a save. */
  async flush(): Promise<void> {
    await this.#writes;
    if (this.#closed) return;
    if (this.#leader) {
      await this.#refresh(false);
      if (this.#idle()) return;
      return new Promise((resolve, reject) => {
        this.#waiters.push({ resolve, reject });
        this.#schedule();
      });
    }
    const id = uuidv7();
    return new Promise((resolve, reject) => {
      this.#remote.set(id, { resolve, reject });
      this.#post({ t: "flush", id });
    });
  }

  /** Forgets the conflicts shown in the status. */
  clearConflicts(): void {
    this.#conflicts = [];
    if (!this.#leader) this.#post({ t: "clear" });
    this.#publish();
  }

  /** Flushes, then stops: lets another tab save the document and closes the database. */
  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.flush();
    } finally {
      this.#stop();
    }
  }

  async #start(options: AutoSaveOptions): Promise<void> {
    const Channel = options.BroadcastChannel ?? (globalThis.BroadcastChannel as (new (name: string) => ChannelLike) | undefined);
    if (Channel) {
      this.#channel = new Channel(`lifeboat:${this.#name}`);
      this.#channel.onmessage = (event) => this.#hear(event.data as Message);
    }
    this.#page?.addEventListener("pagehide", this.#leave, true);
    this.#page?.addEventListener("visibilitychange", this.#hide, true);
    const { records } = await load(this.#db, this.#doc);
    this.#pending = count(records);
    this.#state = records.reduce<unknown>((state, record) => applyPatch(state, record.patch), this.#base);
    const locks = options.locks ?? (globalThis.navigator as { locks?: LockManagerLike } | undefined)?.locks;
    // Web Locks exist only in secure contexts (https, localhost): without them every tab saves (see the README).
    if (!locks && this.#page) console.warn("lifeboat: no Web Locks (not a secure context?): every tab saves; open one tab per document");
    const held = new Promise<void>((resolve) => (this.#release = resolve));
    await elect(locks, `lifeboat:${this.#name}`, this.#abort.signal, held, () => this.#lead());
    if (!this.#leader) this.#post({ t: "hello" });
    this.#publish();
  }

  /** This tab now saves the document: load the outbox, take over a save sent at the last page exit, and send what is there. */
  async #lead(): Promise<void> {
    if (this.#closed) return;
    this.#leader = true;
    const { records, known } = await load(this.#db, this.#doc).catch((error: unknown) => {
      this.#leader = false; // The lock is let go: another tab leads.
      throw error;
    });
    if (known && known.revision > this.#revision) {
      this.#base = known.state;
      this.#revision = known.revision;
    }
    this.#mirror = records;
    this.#seen = Math.max(0, ...records.map((record) => record.id!));
    this.#takeMarker();
    this.#dropNoops();
    const [first] = this.#mirror;
    if (first?.key !== undefined && !this.#sealed) {
      this.#sealed = { ids: [first.id!], patch: first.patch, key: first.key, revision: first.revision!, edits: first.edits, persisted: Promise.resolve() };
    }
    this.#firstEditAt = this.#lastEditAt = null;
    for (const waiter of this.#remote.values()) this.#waiters.push(waiter);
    this.#remote.clear();
    this.#restate();
    this.#post({ t: "leader" });
    this.#publish();
    this.#schedule();
  }

  /**
   * A previous page sent a save with keepalive and may have died before IndexedDB knew:
   * if the records it named still lead the outbox, seal exactly them, with its patch
   * and key, so that the server replays the answer if that save landed.
   */
  #takeMarker(): void {
    const marker = this.#marker();
    if (!marker) return;
    const first = this.#mirror[0];
    const matches = marker.ids.every((id, i) => this.#mirror[i]?.id === id) && (first?.key ?? marker.key) === marker.key;
    if (!matches) return this.#unmark(marker.key);
    if (first?.key === undefined) this.#seal(marker);
    // A marker from the future is a wall clock stepped back since: the grace counts from now.
    const graceEnds = Math.min(marker.at, Date.now()) + KEEPALIVE_GRACE_MS;
    if (graceEnds > Date.now()) this.#retryAt = graceEnds;
  }

  /** Leader: puts edit `edit` into the outbox in transaction `tx`: into the newest unsent record if they combine, else as a new record. */
  async #place(outbox: IDBObjectStore, edit: JsonObject): Promise<void> {
    this.#absorb(await records(outbox, this.#doc));
    this.#undecided.shift();
    const last = this.#mirror.at(-1);
    if (last && last.key === undefined && coalesce(last.patch, edit)) {
      last.edits++;
      outbox.put(last);
    } else {
      // In the mirror at once (without an id, so no save takes it yet) for `#state` and the count.
      const record: OutboxRecord = { doc: this.#doc, patch: edit, edits: 1 };
      this.#mirror.push(record);
      record.id = this.#seen = (await result(outbox.add(record))) as number;
    }
    this.#edited();
  }

  /** Leader: an edit arrived (this tab's or another's): the debounce starts again, the status shows it. */
  #edited(): void {
    const now = Date.now();
    this.#firstEditAt ??= now;
    this.#lastEditAt = now;
    // While a save keeps failing, the status goes on saying why (offline, error).
    if (this.#tries === 0 && this.#activity !== "offline") this.#activity = this.#sealed ? "saving" : "idle";
    this.#publish();
    this.#schedule();
  }

  /** Leader: takes in records other tabs added since `#seen`. */
  #absorb(records: OutboxRecord[]): boolean {
    const fresh = records.filter((record) => record.id! > this.#seen);
    if (fresh.length === 0) return false;
    this.#mirror.push(...fresh);
    this.#seen = fresh.at(-1)!.id!;
    this.#restate();
    return true;
  }

  /** Leader: reads the outbox for other tabs' new edits (`edited`: one was announced, so the debounce restarts). */
  async #refresh(edited: boolean): Promise<void> {
    let found: OutboxRecord[];
    try {
      found = await records(this.#db.transaction("outbox").objectStore("outbox"), this.#doc);
    } catch {
      return; // Closed meanwhile.
    }
    if (!this.#closed && this.#absorb(found) && edited) this.#edited();
  }

  /** `#state` again from `#base`: the outbox's patches, then this tab's edits still on their way to it. */
  #restate(): void {
    const patches = [...this.#mirror.map((record) => record.patch), ...this.#undecided];
    this.#state = patches.reduce<unknown>(applyPatch, this.#base);
  }

  /** The next save from the outbox: its leading records combined while they can be, under a new key. */
  #plan(): Save | null {
    const [first, ...rest] = this.#mirror;
    if (first?.id === undefined) return null;
    const save: Save = { ids: [first.id!], patch: structuredClone(first.patch), key: uuidv7(), revision: this.#revision, edits: first.edits };
    for (const record of rest) {
      if (record.id === undefined || !coalesce(save.patch, record.patch)) break;
      save.ids.push(record.id!);
      save.edits += record.edits;
    }
    return save;
  }

  /** Seals `save` now (in `#mirror`, so no edit joins its records) and in IndexedDB, durably. */
  #seal(save: Save): void {
    const [id, ...merged] = save.ids;
    const record: OutboxRecord = { id: id!, doc: this.#doc, patch: save.patch, edits: save.edits, key: save.key, revision: save.revision };
    this.#mirror = [record, ...this.#mirror.filter((r) => !save.ids.includes(r.id!))];
    // If IndexedDB fails, the save is still sent: the edits are in memory.
    const persisted = write(
      this.#db,
      ["outbox"],
      (tx) => {
        const outbox = tx.objectStore("outbox");
        outbox.put(record);
        for (const id of merged) outbox.delete(id);
      },
      "strict",
    );
    this.#sealed = { ...save, persisted };
    this.#firstEditAt = this.#lastEditAt = null;
  }

  /** When the next save is due (ms since the epoch), or null if none is. */
  #due(): number | null {
    if (!this.#leader || this.#inFlight || this.#closed) return null;
    if (this.#sealed) return this.#retryAt ?? 0;
    if (this.#mirror.length === 0) return null;
    if (this.#waiters.length > 0 || this.#asked.length > 0 || this.#firstEditAt === null) return 0;
    return Math.min(this.#lastEditAt! + this.#debounceMs, this.#firstEditAt + this.#maxWaitMs);
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    const due = this.#due();
    if (due !== null) this.#timer = setTimeout(() => void this.#run(), Math.max(0, due - Date.now()));
  }

  async #run(): Promise<void> {
    const due = this.#due();
    if (due === null) return;
    const early = due - Date.now();
    if (early > 0 && early <= EARLY_TIMER_MS) return this.#schedule();
    this.#dropNoops();
    if (!this.#sealed) {
      const save = this.#plan();
      if (!save) return;
      this.#seal(save);
    }
    await this.#send(false);
  }

  /**
   * Drops the leading outbox records that would change nothing on `#base`: a save that
   * landed before this page knew (the state it read already holds it), or edits undone
   * before they were sent. Sending them would only make a revision equal to the last.
   */
  #dropNoops(): void {
    let dropped = false;
    for (let first = this.#mirror[0]; first?.id !== undefined; first = this.#mirror[0]) {
      if (!same(applyPatch(this.#base, first.patch), this.#base)) break;
      const id = first.id;
      if (this.#sealed?.ids[0] === id) this.#forget(this.#sealed);
      else this.#mirror.shift();
      if (first.key !== undefined) this.#unmark(first.key);
      this.#delete(id);
      dropped = true;
    }
    if (dropped && this.#idle()) this.#set("saved");
  }

  /** Sends the sealed save once (`keepalive` at page exit) and handles the answer. */
  async #send(keepalive: boolean): Promise<void> {
    const sealed = this.#sealed!;
    const attempt = ++this.#attempts;
    this.#inFlight = true;
    // While a save keeps failing, the status goes on saying why (offline, error) until an answer.
    if (this.#tries === 0) this.#set("saving");
    try {
      if (!keepalive) await sealed.persisted;
      if (attempt !== this.#attempts) return;
      this.#fetching = true;
      const response = await this.#client.requestOnce("PATCH", this.#path, {
        mergePatch: sealed.patch,
        idempotencyKey: sealed.key,
        headers: { "if-match": `"${sealed.revision}"` },
        keepalive,
      });
      const saved = (await response.json().catch(() => ({}))) as Partial<ProjectSaved>;
      if (!this.#closed) await this.#acknowledged(sealed, saved.revision ?? sealed.revision + 1);
    } catch (error) {
      if (!this.#closed) await this.#failed(sealed, error);
    } finally {
      if (attempt === this.#attempts) {
        this.#inFlight = this.#fetching = false;
        this.#schedule();
      }
    }
  }

  /**
   * The server saved `sealed` as `revision` (or replayed that answer). Only a save based on
   * `#revision` answered `#revision + 1` is known to make `#base + patch`; a newer answer to
   * one based elsewhere (sealed by an earlier page, opened offline from an older state) is
   * followed by a read of the project. An older one: a replay this state already holds.
   */
  async #acknowledged(sealed: Sealed, revision: number): Promise<void> {
    const known =
      sealed.revision === this.#revision && revision === this.#revision + 1
        ? { revision, state: applyPatch(this.#base, sealed.patch) }
        : revision > this.#revision
          ? await this.#read("").catch(() => null) // Unread: the next save's 412 reads it.
          : null;
    if (this.#closed) return;
    if (known && known.revision > this.#revision) {
      this.#base = known.state;
      this.#revision = known.revision;
    }
    const doc = { doc: this.#doc, revision: this.#revision, state: this.#base };
    void write(this.#db, ["outbox", "docs"], (tx) => {
      if (known) tx.objectStore("docs").put(doc);
      tx.objectStore("outbox").delete(sealed.ids[0]!);
    });
    this.#forget(sealed);
    this.#restate(); // After a replay, the base may be newer than the patch that was pending.
    this.#error = null;
    this.#set("saved");
  }

  /** A save failed: rebase on a 412, drop the patch on a refusal, else try again later. */
  async #failed(sealed: Sealed, error: unknown): Promise<void> {
    const problem = error instanceof LifeboatError ? error : null;
    if (problem?.status === 412) return this.#rebase(sealed);
    // Only a refusal of this patch for good (400, 409 patch-conflict, 413, 415, 422) drops it;
    // anything else (401, 403, 404, 5xx, offline: a token, a project or a server that may
    // come back) keeps the edits and tries again.
    if (problem && ([400, 413, 415, 422].includes(problem.status) || problem.slug === "patch-conflict")) {
      this.#delete(sealed.ids[0]!);
      this.#forget(sealed);
      this.#restate();
      this.#error = problem.detail || problem.message;
      this.#settle(this.#error); // Before the status, whose publishing resolves flushes once the outbox is empty.
      this.#set("error");
      return;
    }
    this.#retry(error);
  }

  /** Schedules the next attempt of the sealed save after a full-jitter backoff or the server's Retry-After. */
  #retry(error: unknown): void {
    this.#tries++;
    const problem = error instanceof LifeboatError ? error : null;
    // `Date.now()` counts whole milliseconds, so the wait starts at the next one: a
    // Retry-After of 2 s is never honoured with 1.999 s.
    this.#retryAt = Date.now() + 1 + backoffMs(this.#tries, problem?.retryAfterMs ?? null);
    this.#error = problem?.detail || String((error as Error)?.message ?? error);
    this.#set(problem?.kind === "offline" ? "offline" : "error");
  }

  #delete(id: number): void {
    void write(this.#db, ["outbox"], (tx) => tx.objectStore("outbox").delete(id));
  }

  /** The sealed save is settled: forget it here and in `localStorage`. */
  #forget(sealed: Sealed): void {
    this.#mirror = this.#mirror.filter((record) => record.id !== sealed.ids[0]);
    this.#sealed = null;
    this.#tries = 0;
    this.#retryAt = null;
    this.#unmark(sealed.key);
  }

  /**
   * Another writer saved first (412): read the project, note the fields both changed,
   * and seal the same patch again on top of the new revision, under a new key.
   */
  async #rebase(sealed: Sealed): Promise<void> {
    let current: ProjectBody;
    let before = this.#base;
    try {
      current = await this.#read("");
      if (sealed.revision !== this.#revision) {
        // Sealed by an earlier page: compare with the revision it was based on, if still kept.
        before = await this.#read(`?revision=${sealed.revision}`).then((project) => project.state, () => current.state);
      }
    } catch (error) {
      return this.#retry(error);
    }
    if (this.#closed) return;
    this.#base = current.state;
    this.#revision = current.revision;
    const known = { doc: this.#doc, revision: current.revision, state: current.state };
    void write(this.#db, ["docs"], (tx) => tx.objectStore("docs").put(known));
    this.#unmark(sealed.key);
    // Already in the state read (this page's own earlier save, landed unknown to it): dropped, no conflict.
    this.#dropNoops();
    if (this.#sealed !== sealed) return this.#restate();
    for (const field of touched(sealed.patch)) {
      if (!same(at(before, field), at(current.state, field)) && !this.#conflicts.includes(field)) this.#conflicts.push(field);
    }
    const record: OutboxRecord = { id: sealed.ids[0]!, doc: this.#doc, patch: sealed.patch, edits: sealed.edits, key: uuidv7(), revision: current.revision };
    this.#mirror[0] = record;
    const persisted = write(this.#db, ["outbox"], (tx) => tx.objectStore("outbox").put(record), "strict");
    this.#sealed = { ...sealed, key: record.key!, revision: current.revision, persisted };
    this.#retryAt = null;
    this.#restate();
  }

  async #read(query: string): Promise<ProjectBody> {
    const response = await this.#client.requestOnce("GET", `${this.#path}${query}`);
    return (await response.json()) as ProjectBody;
  }

  /** `visibilitychange`: the page is hidden, maybe for good. */
  #hide = (): void => {
    if (this.#page?.document?.visibilityState === "hidden") this.#leave();
  };

  /**
   * `pagehide` (or hidden): the page may die at any moment, and IndexedDB writes started
   * now may never finish. Send the next save with keepalive if it fits the budget, after
   * a synchronous marker in `localStorage` naming its records, patch and key.
   */
  #leave = (): void => {
    const storage = this.#storage();
    if (!storage || !this.#leader || this.#fetching || this.#closed) return;
    this.#dropNoops();
    const save = this.#sealed ?? this.#plan();
    if (!save) return;
    const bytes = new TextEncoder().encode(JSON.stringify(save.patch)).length;
    if (bytes > this.#keepaliveBytes) return; // It stays in the outbox for the next load.
    const marker: Marker = { ids: save.ids, patch: save.patch, key: save.key, revision: save.revision, edits: save.edits, at: Date.now() };
    try {
      storage.setItem(this.#markerKey(), JSON.stringify(marker));
    } catch {
      return; // Storage full or denied: without the marker, a keepalive save is not replay-safe.
    }
    if (!this.#sealed) this.#seal(save);
    clearTimeout(this.#timer);
    void this.#send(true);
  };

  #storage(): PageLike["localStorage"] | null {
    try {
      return this.#page?.localStorage ?? null;
    } catch {
      return null; // Denied (an opaque origin, disabled storage).
    }
  }

  #markerKey(): string {
    return `lifeboat:sealed:${this.#name}`;
  }

  #marker(): Marker | null {
    try {
      return JSON.parse(this.#storage()?.getItem(this.#markerKey()) ?? "null") as Marker | null;
    } catch {
      return null;
    }
  }

  /** Removes the marker if it names the save with `key`. */
  #unmark(key: string): void {
    if (this.#marker()?.key === key) this.#storage()?.removeItem(this.#markerKey());
  }

  #hear(message: Message): void {
    if (this.#closed) return;
    if (this.#leader) {
      if (message.t === "edit") void this.#refresh(true);
      else if (message.t === "hello") this.#post({ t: "status", status: this.#status });
      else if (message.t === "clear") this.clearConflicts();
      else if (message.t === "flush") {
        const id = message.id;
        void this.#refresh(false).then(() => {
          this.#asked.push(id);
          this.#publish();
          this.#schedule();
        });
      }
    } else if (message.t === "status") {
      this.#activity = message.status.state === "conflict" ? "saved" : message.status.state;
      this.#pending = message.status.pending;
      this.#shownRevision = message.status.revision;
      this.#conflicts = message.status.conflicts;
      this.#error = message.status.error;
      this.#publish();
    } else if (message.t === "flushed") {
      const waiter = this.#remote.get(message.id);
      this.#remote.delete(message.id);
      if (message.error === undefined) waiter?.resolve();
      else waiter?.reject(new Error(message.error));
    } else if (message.t === "leader") {
      // A new leader never heard the flushes asked of the old one.
      for (const id of this.#remote.keys()) this.#post({ t: "flush", id });
    }
  }

  #post(message: Message): void {
    try {
      this.#channel?.postMessage(message);
    } catch {
      // Closed: this tab is going away.
    }
  }

  #idle(): boolean {
    return !this.#sealed && this.#mirror.length === 0;
  }

  #set(activity: Exclude<SaveState, "conflict">): void {
    this.#activity = activity;
    this.#publish();
  }

  #compose(): SaveStatus {
    const activity = this.#activity;
    const conflict = this.#conflicts.length > 0 && (activity === "saved" || activity === "idle");
    return {
      state: conflict ? "conflict" : activity,
      pending: this.#leader ? count(this.#mirror) : this.#pending,
      revision: this.#leader ? this.#revision : this.#shownRevision,
      conflicts: [...this.#conflicts],
      error: activity === "error" ? this.#error : null,
      leader: this.#leader,
    };
  }

  /** Makes the status current: tells the listeners (and, as leader, the other tabs), and settles flushes once nothing is pending. */
  #publish(): void {
    const status = this.#compose();
    if (this.#leader && this.#idle()) this.#settle();
    if (JSON.stringify(status) === JSON.stringify(this.#status)) return;
    this.#status = status;
    if (this.#leader) this.#post({ t: "status", status });
    for (const listener of this.#listeners) listener(status);
  }

  /** Answers every waiting flush: resolved, or rejected with `error`. */
  #settle(error?: string): void {
    for (const waiter of this.#waiters.splice(0)) {
      if (error === undefined) waiter.resolve();
      else waiter.reject(new Error(error));
    }
    for (const id of this.#asked.splice(0)) this.#post(error === undefined ? { t: "flushed", id } : { t: "flushed", id, error });
  }

  #stop(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#page?.removeEventListener("pagehide", this.#leave, true);
    this.#page?.removeEventListener("visibilitychange", this.#hide, true);
    this.#channel?.close();
    this.#release();
    this.#abort.abort();
    this.#db.close();
    for (const waiter of [...this.#waiters.splice(0), ...this.#remote.values()]) waiter.reject(new Error("the AutoSaver is closed"));
    this.#remote.clear();
  }
}

/** The edits held by `records`. */
function count(records: OutboxRecord[]): number {
  return records.reduce((sum, record) => sum + record.edits, 0);
}

/**
 * The project (created empty if there is none) and its document key, the URL it was
 * read from. `retry`: with the client's retries; without, one attempt.
 */
async function readProject(client: Client, path: string, retry: boolean): Promise<{ doc: string; revision: number; state: unknown }> {
  const get = async (): Promise<{ doc: string; revision: number; state: unknown }> => {
    const response = await client.request("GET", path, { retry });
    const project = (await response.json()) as ProjectBody;
    return { doc: docKey(client, path), revision: project.revision, state: project.state };
  };
  try {
    return await get();
  } catch (error) {
    if (!(error instanceof LifeboatError && error.status === 404)) throw error;
  }
  try {
    const response = await client.request("PUT", path, { json: { state: {} }, headers: { "if-none-match": "*" }, idempotencyKey: uuidv7() });
    const saved = (await response.json()) as ProjectSaved;
    return { doc: docKey(client, path), revision: saved.revision, state: {} };
  } catch (error) {
    if (!(error instanceof LifeboatError && error.status === 412)) throw error;
    return get(); // Someone else created it first.
  }
}

/** The document key: the project's URL (server origin, base path, id), so two servers or two projects never mix. */
function docKey(client: Client, path: string): string {
  return `${client.baseUrl}/api/v1${path}`;
}

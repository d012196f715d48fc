// The AutoSaver against a fake Lifeboat (test/autosave-fakes.ts), fake-indexeddb, and fake
// tabs (Web Locks, BroadcastChannel, window, localStorage). Time is vitest's fake clock
// (setTimeout and Date only: IndexedDB runs on the real setImmediate), moved in 50 ms steps
// with IndexedDB let run after each, so the times asserted are exact.
//
// What these cannot show: a real browser's keepalive budget, page lifecycle and IndexedDB
// durability — the browser tests (test/browser/) do.

import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { AutoSaver, type AutoSaveOptions } from "../src/index.js";
import { IDBDatabase } from "fake-indexeddb";
import { type OutboxRecord, load, openOutbox } from "../src/outbox.js";
import { FakeBrowser, FakeLifeboat, type FakeTab, drive, elapse, problem, settle, until } from "./autosave-fakes.js";

const ID = "essay-7";
const PATH = `/projects/${ID}`;
const DOC = `http://lifeboat.test/api/v1${PATH}`;
const MARKER = `lifeboat:sealed:lifeboat:${DOC}`;
const UUIDV7 = /^"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"$/;

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
});
afterEach(() => {
  vi.useRealTimers();
});

/** A server (with project `ID` at the given states, if any) and a browser. */
function world(...states: unknown[]): { server: FakeLifeboat; browser: FakeBrowser } {
  const server = new FakeLifeboat();
  if (states.length > 0) server.seed(ID, ...states);
  return { server, browser: new FakeBrowser() };
}

function open(server: FakeLifeboat, tab: FakeTab, options: AutoSaveOptions = {}): Promise<AutoSaver> {
  return AutoSaver.open(server.client("http://lifeboat.test", tab.name), ID, tab.options(options));
}

/** The page of `tab` is gone: its locks and channel, and any request it would still make. */
function die(tab: FakeTab, server: FakeLifeboat): void {
  tab.kill();
  server.dead.add(tab.name);
}

/** The outbox records of `doc`, read straight from IndexedDB. */
async function outbox(browser: FakeBrowser, doc = DOC): Promise<OutboxRecord[]> {
  const db = await openOutbox(browser.indexedDB, "lifeboat");
  const { records } = await load(db, doc);
  db.close();
  return records;
}

const key = (request: { headers: Headers }): string | null => request.headers.get("idempotency-key");

/** Puts what an earlier page left into IndexedDB: the state it knew, and outbox records. */
async function leftBehind(browser: FakeBrowser, known: { revision: number; state: unknown }, ...records: Omit<OutboxRecord, "doc">[]): Promise<void> {
  const db = await openOutbox(browser.indexedDB, "lifeboat");
  const tx = db.transaction(["outbox", "docs"], "readwrite");
  tx.objectStore("docs").put({ doc: DOC, ...known });
  for (const record of records) tx.objectStore("outbox").add({ doc: DOC, ...record });
  await new Promise((resolve) => (tx.oncomplete = resolve));
  db.close();
}

describe("AutoSaver.open", () => {
  // Opening an absent project creates it empty, create-only; an existing one is only read.
  test("creates an absent project empty with PUT If-None-Match: *, and only reads an existing one", async () => {
    const { server, browser } = world();
    const saver = await open(server, browser.tab());
    const put = server.seen.find((request) => request.method === "PUT")!;
    expect(put.headers.get("if-none-match")).toBe("*");
    expect(put.json).toEqual({ state: {} });
    expect(saver.status).toEqual({ state: "idle", pending: 0, revision: 1, conflicts: [], error: null, leader: true });
    expect(saver.state).toEqual({});
    await drive(saver.close());

    server.seed("other", { title: "Hello" }, { title: "Hello, world" });
    const before = server.seen.length;
    const other = await AutoSaver.open(server.client(), "other", browser.tab().options());
    expect(server.seen.slice(before).map((r) => r.method)).toEqual(["GET"]);
    expect(other.status.revision).toBe(2);
    expect(other.state).toEqual({ title: "Hello, world" });
    await drive(other.close());
  });

  // Between our 404 and our PUT someone else created it: the PUT's 412 leads to a read.
  test("a create refused with 412 (someone else was first) reads the project instead", async () => {
    const { server, browser } = world({ title: "Theirs" });
    server.once((request) => request.method === "GET", problem(404, "not-found", "no project"));
    const saver = await open(server, browser.tab());
    expect(server.seen.map((r) => `${r.method} ${r.status}`)).toEqual(["GET 404", "PUT 412", "GET 200"]);
    expect(saver.state).toEqual({ title: "Theirs" });
    expect(saver.status.revision).toBe(1);
    await drive(saver.close());
  });

  // The server is unreachable at open: the document comes from what this browser last
  // knew (the `docs` store) plus the outbox, and is saved once the server is back.
  test("opened offline: the state this browser last knew with the pending edits, saved once the server is back", async () => {
    const { server, browser } = world({ title: "Known" });
    const first = browser.tab();
    const saver = await open(server, first, { debounceMs: 100 });
    server.offline = true;
    await saver.edit({ body: "Written offline" });
    await until(() => saver.status.state === "offline");
    die(first, server);

    const again = await open(server, browser.tab(), { debounceMs: 100 });
    expect(again.status).toMatchObject({ state: "offline", pending: 1, revision: 1, leader: true });
    expect(again.state).toEqual({ title: "Known", body: "Written offline" });
    server.offline = false;
    await until(() => again.status.state === "saved", 20_000);
    expect(server.state(ID)).toEqual({ title: "Known", body: "Written offline" });
    expect(server.revision(ID)).toBe(2);
  });
});

describe("when saves go", () => {
  // Three edits within the debounce: one PATCH, 2 s after the last, the three combined.
  test("debounce: one save 2 s after the last edit, edits combined, with If-Match and a UUIDv7 key", async () => {
    const { server, browser } = world({ title: "Draft 1" });
    const saver = await open(server, browser.tab());
    const start = Date.now();
    await saver.edit({ title: "Draft 2" });
    await elapse(500);
    await saver.edit({ body: { p1: "It was" } });
    await elapse(1000);
    await saver.edit({ body: { p1: "It was a dark night" } });
    expect(saver.status).toMatchObject({ state: "idle", pending: 3 });
    await elapse(1950);
    expect(server.patches()).toHaveLength(0);
    await elapse(100);
    const patches = server.patches();
    expect(patches).toHaveLength(1);
    expect(patches[0]!.at - start).toBe(1500 + 2000);
    expect(patches[0]!.json).toEqual({ title: "Draft 2", body: { p1: "It was a dark night" } });
    expect(patches[0]!.headers.get("content-type")).toBe("application/merge-patch+json");
    expect(patches[0]!.headers.get("if-match")).toBe('"1"');
    expect(key(patches[0]!)).toMatch(UUIDV7);
    expect(saver.status).toEqual({ state: "saved", pending: 0, revision: 2, conflicts: [], error: null, leader: true });
    expect(server.state(ID)).toEqual({ title: "Draft 2", body: { p1: "It was a dark night" } });
    expect(await outbox(browser)).toEqual([]);
  });

  // An edit every second never lets the 2 s debounce run out; max wait sends at 10 s.
  test("max wait: edits every second hold off the debounce, but the first save goes 10 s after the first edit", async () => {
    const { server, browser } = world({});
    const saver = await open(server, browser.tab());
    const start = Date.now();
    for (let i = 0; i < 15; i++) {
      await saver.edit({ [`e${i}`]: i });
      await elapse(1000);
    }
    const [first] = server.patches();
    expect(first!.at - start).toBe(10_000);
    expect(Object.keys(first!.json as object)).toEqual(["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"]);
    await drive(saver.flush());
    expect(Object.keys(server.state(ID) as object)).toHaveLength(15);
  });

  // A server slower than the edits: saves queue behind each other, never overlap.
  test("one save in flight: a slow server and many edits never see two PATCHes at once, and every edit arrives", async () => {
    const { server, browser } = world({});
    const saver = await open(server, browser.tab(), { debounceMs: 100, maxWaitMs: 400 });
    server.delayMs = 1500;
    const expected: Record<string, number> = {};
    for (let i = 0; i < 60; i++) {
      await saver.edit({ [`k${i}`]: i });
      expected[`k${i}`] = i;
      await elapse(100);
    }
    await drive(saver.flush());
    expect(server.maxInFlight.get(PATH)).toBe(1);
    expect(server.patches().length).toBeGreaterThan(3);
    expect(server.state(ID)).toEqual(expected);
    expect(saver.status).toMatchObject({ state: "saved", pending: 0, revision: 1 + server.patches().length });
  });

  // Patches that cannot be one patch stay two records, and two saves, in order.
  test("a deleted field set again to an object makes a new outbox record; the records are saved in order", async () => {
    const { server, browser } = world({ a: { y: 2 }, b: 1 });
    const saver = await open(server, browser.tab());
    await saver.edit({ a: null });
    await saver.edit({ b: 2 });
    await saver.edit({ a: { x: 1 } });
    await saver.edit({ b: 3 });
    const records = await outbox(browser);
    expect(records.map((r) => [r.patch, r.edits, r.key])).toEqual([
      [{ a: null, b: 2 }, 2, undefined],
      [{ a: { x: 1 }, b: 3 }, 2, undefined],
    ]);
    expect(saver.status.pending).toBe(4);
    expect(saver.state).toEqual({ a: { x: 1 }, b: 3 });
    await drive(saver.flush());
    expect(server.patches().map((r) => r.json)).toEqual([
      { a: null, b: 2 },
      { a: { x: 1 }, b: 3 },
    ]);
    expect(server.state(ID)).toEqual({ a: { x: 1 }, b: 3 });
  });

  // An edit undone before the debounce ran out leaves nothing to save: no revision that
  // equals the one before.
  test("edits undone within the debounce send nothing", async () => {
    const { server, browser } = world({ title: "Draft 1" });
    const saver = await open(server, browser.tab());
    await saver.edit({ title: "Draft 1x" });
    await saver.edit({ title: "Draft 1" });
    expect(saver.status.pending).toBe(2);
    await elapse(3000);
    expect(server.patches()).toHaveLength(0);
    expect(saver.status).toMatchObject({ state: "saved", pending: 0, revision: 1 });
    expect(await outbox(browser)).toEqual([]);
  });

  // Edits wait in IndexedDB until the save is sealed; the seal alone is strict.
  test("the transaction that seals a save has durability strict; the ones that write edits do not", async () => {
    const { server, browser } = world({});
    const saver = await open(server, browser.tab());
    const original = IDBDatabase.prototype.transaction;
    const durabilities: string[] = [];
    const spy = vi.spyOn(IDBDatabase.prototype, "transaction").mockImplementation(function (
      this: IDBDatabase,
      names: string | string[],
      mode?: IDBTransactionMode,
      options?: IDBTransactionOptions,
    ) {
      if (mode === "readwrite") durabilities.push(options?.durability ?? "default");
      return original.call(this, names, mode, options);
    });
    try {
      for (let i = 0; i < 3; i++) await saver.edit({ [`e${i}`]: i });
      await drive(saver.flush());
    } finally {
      spy.mockRestore();
    }
    expect(durabilities).toEqual(["default", "default", "default", "strict", "default"]);
  });
});

describe("when saves fail", () => {
  // 503 + Retry-After: 3: the same save (key and body) again no sooner than 3 s later.
  test("a 503 with Retry-After: 3 makes the next attempt wait at least 3 s, with the same key and body", async () => {
    const { server, browser } = world({});
    const saver = await open(server, browser.tab(), { debounceMs: 100 });
    server.once((r) => r.method === "PATCH", problem(503, "storage-unavailable", "try again later", { "retry-after": "3" }));
    await saver.edit({ title: "After a 503" });
    await until(() => server.patches().length === 1);
    const first = server.patches()[0]!;
    expect(saver.status).toMatchObject({ state: "error", error: "try again later", pending: 1 });
    await elapse(2950);
    expect(server.patches()).toHaveLength(1);
    await until(() => server.patches().length === 2);
    const second = server.patches()[1]!;
    expect(second.at - first.at).toBeGreaterThanOrEqual(3000);
    expect(key(second)).toBe(key(first));
    expect(second.body).toBe(first.body);
    expect(saver.status).toMatchObject({ state: "saved", pending: 0, revision: 2, error: null });
  });

  // The timer runs on a monotonic clock and `Date.now()` on the wall clock, which can lag
  // it (a coarse or slewed clock): a timer that fires before the wall clock reaches the
  // end of the Retry-After is armed again, and the save still waits the whole 2 s.
  test("a Retry-After is waited out on the wall clock even when the timer fires early", async () => {
    const { server, browser } = world({});
    const saver = await open(server, browser.tab(), { debounceMs: 100 });
    server.once((r) => r.method === "PATCH", problem(503, "storage-unavailable", "try again later", { "retry-after": "2" }));
    await saver.edit({ title: "After a 503" });
    await until(() => server.patches().length === 1);
    const fake = Date.now;
    const lagging = vi.spyOn(Date, "now").mockImplementation(() => fake() - 20);
    try {
      await elapse(2000);
      expect(server.patches()).toHaveLength(1);
      await until(() => server.patches().length === 2, 1_000, 5);
    } finally {
      lagging.mockRestore();
    }
    const [first, second] = server.patches();
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(2000);
    expect(saver.status).toMatchObject({ state: "saved", pending: 0, error: null });
  });

  // A wall clock stepped back (by an hour) while a save waits out its Retry-After does not
  // hold the save back by that hour: the timer's own wait counts.
  test("a wall clock stepped back during a Retry-After does not hold the save", async () => {
    const { server, browser } = world({});
    const saver = await open(server, browser.tab(), { debounceMs: 100 });
    server.once((r) => r.method === "PATCH", problem(503, "storage-unavailable", "try again later", { "retry-after": "2" }));
    await saver.edit({ title: "After a 503" });
    await until(() => server.patches().length === 1);
    const fake = Date.now;
    const stepped = vi.spyOn(Date, "now").mockImplementation(() => fake() - 3_600_000);
    try {
      await elapse(2100);
      expect(server.patches()).toHaveLength(2);
    } finally {
      stepped.mockRestore();
    }
    await until(() => saver.status.state === "saved");
    expect(server.state(ID)).toEqual({ title: "After a 503" });
  });

  // Any 5xx is a server that may come back (500, 507 storage full): the save is kept and
  // sent again with the same key; never dropped.
  test.each([500, 507])("a %i keeps the save: state error with the detail, then the same key again, and it lands", async (status) => {
    const { server, browser } = world({});
    const saver = await open(server, browser.tab(), { debounceMs: 100 });
    server.once((r) => r.method === "PATCH", problem(status, "internal", `server error ${status}`));
    await saver.edit({ title: "Kept" });
    await until(() => server.patches().length === 1);
    expect(saver.status).toMatchObject({ state: "error", error: `server error ${status}`, pending: 1 });
    expect((await outbox(browser)).map((r) => r.patch)).toEqual([{ title: "Kept" }]);
    await drive(saver.flush());
    const [first, second] = server.patches();
    expect(key(second!)).toBe(key(first!));
    expect(server.state(ID)).toEqual({ title: "Kept" });
    expect(saver.status).toMatchObject({ state: "saved", pending: 0, error: null });
  });

  // A 404 (the project deleted, or not visible to this token) refuses every record alike:
  // none is dropped, the outbox is kept and retried.
  test("a 404 keeps the outbox: nothing dropped, retried with backoff", async () => {
    const { server, browser } = world({ a: 1 });
    const saver = await open(server, browser.tab(), { debounceMs: 100 });
    const gone = problem(404, "not-found", "no project");
    server.rules.push((r) => (r.method === "PATCH" ? gone : undefined));
    await saver.edit({ a: null });
    await saver.edit({ a: { x: 1 } });
    await elapse(10_000);
    expect(server.patches().length).toBeGreaterThan(2);
    expect(new Set(server.patches().map(key)).size).toBe(1);
    expect(saver.status).toMatchObject({ state: "error", error: "no project", pending: 2 });
    expect((await outbox(browser)).map((r) => r.patch)).toEqual([{ a: null }, { a: { x: 1 } }]);
    server.rules.length = 0;
    await drive(saver.flush());
    expect(server.state(ID)).toEqual({ a: { x: 1 } });
  });

  // No answer at all is "offline" (not navigator.onLine); retries go on, one key throughout.
  test("offline: a failed fetch sets state offline; saving goes on trying with backoff, and lands once", async () => {
    const { server, browser } = world({});
    const saver = await open(server, browser.tab(), { debounceMs: 100 });
    server.offline = true;
    await saver.edit({ title: "Written offline" });
    await until(() => saver.status.state === "offline");
    expect(saver.status.pending).toBe(1);
    const states: string[] = [];
    const off = saver.onStatus((status) => states.push(status.state));
    await elapse(20_000);
    off();
    expect(server.patches().length).toBeGreaterThan(3);
    expect(saver.status).toMatchObject({ state: "offline", pending: 1 });
    expect(states).toEqual([]); // No "saving" flicker between the attempts.
    server.offline = false;
    await until(() => saver.status.state === "saved", 10_000);
    expect(new Set(server.patches().map(key)).size).toBe(1);
    expect(server.revision(ID)).toBe(2);
  });

  // Another writer changed the same field: conflict reported, this edit applied on top.
  test("412 on the same field: re-read, /title reported, the edit re-applied on top under a new key; conflict until clearConflicts", async () => {
    const { server, browser } = world({ title: "A", body: "x" });
    const saver = await open(server, browser.tab(), { debounceMs: 100 });
    server.write(ID, { title: "Theirs" });
    await saver.edit({ title: "Mine" });
    await until(() => saver.status.state === "conflict");
    const [refused, resent] = server.patches();
    expect([refused!.status, resent!.status]).toEqual([412, 200]);
    expect(resent!.headers.get("if-match")).toBe('"2"');
    expect(key(resent!)).toMatch(UUIDV7);
    expect(key(resent!)).not.toBe(key(refused!));
    expect(resent!.body).toBe(refused!.body);
    expect(saver.status).toEqual({ state: "conflict", pending: 0, revision: 3, conflicts: ["/title"], error: null, leader: true });
    expect(server.state(ID)).toEqual({ title: "Mine", body: "x" });
    saver.clearConflicts();
    expect(saver.status).toMatchObject({ state: "saved", conflicts: [] });
  });

  // Another writer changed a different field: no conflict, both changes kept.
  test("412 on different fields: no conflict, both changes kept", async () => {
    const { server, browser } = world({ title: "A", body: "x" });
    const saver = await open(server, browser.tab(), { debounceMs: 100 });
    server.write(ID, { body: "Theirs" });
    await saver.edit({ title: "Mine" });
    await drive(saver.flush());
    expect(server.patches().map((r) => r.status)).toEqual([412, 200]);
    expect(saver.status).toMatchObject({ state: "saved", conflicts: [], revision: 3 });
    expect(server.state(ID)).toEqual({ title: "Mine", body: "Theirs" });
    expect(saver.state).toEqual({ title: "Mine", body: "Theirs" });
  });

  // A permanent refusal: the sealed patch is dropped, the reason shown, flush rejects.
  test("a refused save (422) drops its patch: state error with the problem's detail, flush rejects, later edits are saved", async () => {
    const { server, browser } = world({});
    const saver = await open(server, browser.tab(), { debounceMs: 100 });
    server.once((r) => r.method === "PATCH", problem(422, "validation-failed", "title must be a string"));
    await saver.edit({ title: 7 });
    await expect(drive(saver.flush())).rejects.toThrow("title must be a string");
    expect(saver.status).toMatchObject({ state: "error", error: "title must be a string", pending: 0, revision: 1 });
    expect(saver.state).toEqual({});
    expect(await outbox(browser)).toEqual([]);
    await saver.edit({ title: "Seven" });
    await drive(saver.flush());
    expect(saver.status).toMatchObject({ state: "saved", error: null, revision: 2 });
    expect(server.state(ID)).toEqual({ title: "Seven" });
  });
});

describe("across page loads", () => {
  // Opened offline from an older known state (revision 1) with a save an earlier page
  // sealed against revision 2, which landed as 3: the replayed answer is no reason to take
  // revision 3 as "revision 1 + patch"; the project is read, and the state is the server's.
  test("a replayed save based on another revision than the one known: the project is read again, not rebuilt as known + patch", async () => {
    const { server, browser } = world({ title: "A" }, { title: "A2" });
    const key = "0193e2f4-0000-7000-8000-000000000001";
    await server.client().patchProject(ID, { body: "B" }, { idempotencyKey: key, headers: { "if-match": '"2"' } });
    await leftBehind(browser, { revision: 1, state: { title: "A" } }, { patch: { body: "B" }, edits: 1, key, revision: 2 });
    server.once((r) => r.method === "GET", "offline");
    const saver = await open(server, browser.tab());
    expect(saver.status).toMatchObject({ state: "offline", pending: 1, revision: 1 });
    await drive(saver.flush());
    expect(server.patches().map((r) => r.status)).toEqual([200, 200]); // Ours, then its replay.
    expect(server.revision(ID)).toBe(3);
    expect(saver.state).toEqual({ title: "A2", body: "B" });
    expect(saver.status).toMatchObject({ state: "saved", pending: 0, revision: 3, conflicts: [] });
    const db = await openOutbox(browser.indexedDB, "lifeboat");
    expect((await load(db, DOC)).known).toMatchObject({ revision: 3, state: { title: "A2", body: "B" } });
    db.close();
  });

  // This page's own earlier save landed (revision 2) but it never learned so (no key kept, an
  // older known state): its resend is refused 412, and the state read already holds it. It
  // is dropped: no false conflict, no second revision.
  test("a 412 on a save the server already holds (this page's own, landed unknown): dropped, no conflict, nothing resent", async () => {
    const { server, browser } = world({}, { title: "Mine" });
    await leftBehind(browser, { revision: 1, state: {} }, { patch: { title: "Mine" }, edits: 1 });
    server.once((r) => r.method === "GET", "offline");
    const saver = await open(server, browser.tab());
    expect(saver.status).toMatchObject({ state: "offline", pending: 1, revision: 1 });
    await drive(saver.flush());
    expect(server.patches().map((r) => r.status)).toEqual([412]);
    expect(server.revision(ID)).toBe(2);
    expect(saver.status).toMatchObject({ state: "saved", pending: 0, revision: 2, conflicts: [] });
    expect(saver.state).toEqual({ title: "Mine" });
    expect(await outbox(browser)).toEqual([]);
  });

  // The page dies with a save on the wire (the server saved it; the answer was lost) and
  // an unsent edit behind it; then another writer saves. The next load shows both
  // pending, resends the save with the same key and body (replayed: no second revision,
  // and the revision known does not go back), then sends the rest.
  test("a save sent but never answered is resent by the next load with the same key and body; the server replays it", async () => {
    const { server, browser } = world({});
    const first = browser.tab();
    const saver = await open(server, first, { debounceMs: 100 });
    server.once((r) => r.method === "PATCH", "lost");
    await saver.edit({ title: "One" });
    await saver.edit({ body: "Two" });
    await until(() => server.patches().length === 1);
    await saver.edit({ more: "Three" });
    expect(saver.status.pending).toBe(3);
    die(first, server);
    expect(server.revision(ID)).toBe(2);
    server.write(ID, { title: "Theirs" });
    const records = await outbox(browser);
    expect(records.map((r) => [r.patch, r.key === undefined])).toEqual([
      [{ title: "One", body: "Two" }, false],
      [{ more: "Three" }, true],
    ]);

    const again = await open(server, browser.tab(), { debounceMs: 100 });
    expect(again.status).toMatchObject({ pending: 3, leader: true, revision: 3 });
    expect(again.state).toEqual({ title: "One", body: "Two", more: "Three" });
    await drive(again.flush());
    const [lost, resent, rest] = server.patches();
    expect(key(resent!)).toBe(key(lost!));
    expect(resent!.body).toBe(lost!.body);
    expect(resent!.headers.get("if-match")).toBe('"1"');
    expect(resent!.status).toBe(200);
    expect(rest!.json).toEqual({ more: "Three" });
    expect(rest!.headers.get("if-match")).toBe('"3"');
    expect(server.revision(ID)).toBe(4);
    expect(again.status).toMatchObject({ state: "saved", pending: 0, revision: 4, conflicts: [] });
    expect(again.state).toEqual({ title: "Theirs", body: "Two", more: "Three" });
  });

  // pagehide with a small patch pending: one keepalive PATCH, the marker written before
  // it and removed once it is answered; visibilitychange after it sends nothing more.
  test("page exit: a small pending patch goes out once with keepalive, after a localStorage marker naming its records and key", async () => {
    const { server, browser } = world({});
    const tab = browser.tab();
    const saver = await open(server, tab);
    server.delayMs = 1000;
    await saver.edit({ title: "Closed within 500 ms" });
    const [record] = await outbox(browser);
    await elapse(200);
    tab.window!.pagehide(); // Chromium fires pagehide first, then visibilitychange.
    const marker = JSON.parse(browser.localStorage.getItem(MARKER)!);
    tab.window!.hide();
    await settle();
    const sent = server.patches();
    expect(sent).toHaveLength(1);
    expect(sent[0]!.keepalive).toBe(true);
    expect(sent[0]!.headers.get("if-match")).toBe('"1"');
    expect(marker).toMatchObject({ key: key(sent[0]!)!.slice(1, -1), ids: [record!.id], revision: 1, patch: { title: "Closed within 500 ms" } });
    await elapse(1000);
    expect(browser.localStorage.getItem(MARKER)).toBeNull();
    expect(saver.status).toMatchObject({ state: "saved", pending: 0, revision: 2 });
    await elapse(3000); // Past the debounce: nothing else is sent.
    expect(server.patches()).toHaveLength(1);
  });

  // Over the keepalive budget: nothing at exit, the edit waits in the outbox.
  test("page exit: a 100 KiB patch is not sent with keepalive; it stays in the outbox and is saved at the next load", async () => {
    const { server, browser } = world({});
    const first = browser.tab();
    const saver = await open(server, first);
    const big = "0123456789abcdef".repeat(6400);
    await saver.edit({ body: big });
    first.window!.pagehide();
    first.window!.hide();
    await settle();
    expect(server.patches()).toHaveLength(0);
    expect(browser.localStorage.getItem(MARKER)).toBeNull();
    expect((await outbox(browser)).map((r) => r.patch)).toEqual([{ body: big }]);
    die(first, server);

    const again = await open(server, browser.tab());
    expect(again.status.pending).toBe(1);
    await drive(again.flush());
    expect(server.patches().map((r) => r.keepalive)).toEqual([false]);
    expect(server.state(ID)).toEqual({ body: big });
  });

  // The worst exit: the keepalive save lands, but the page dies before IndexedDB records
  // the seal; then another writer changes the same field. The marker lets the next load
  // seal the same records with the same key and body, after a grace period: the server
  // replays the first answer instead of applying the old edit over the newer one.
  test("page exit, then death before IndexedDB seals: the next load seals the marker's records with its key; the server replays", async () => {
    const { server, browser } = world({});
    const first = browser.tab();
    const saver = await open(server, first);
    await saver.edit({ title: "Sent at exit" });
    const original = IDBDatabase.prototype.transaction;
    const spy = vi.spyOn(IDBDatabase.prototype, "transaction").mockImplementation(function (
      this: IDBDatabase,
      names: string | string[],
      mode?: IDBTransactionMode,
      options?: IDBTransactionOptions,
    ) {
      const tx = original.call(this, names, mode, options);
      if (options?.durability === "strict") queueMicrotask(() => tx.abort()); // Never completes.
      return tx;
    });
    server.once((r) => r.method === "PATCH", "lost");
    try {
      first.window!.pagehide();
      die(first, server);
      await settle();
    } finally {
      spy.mockRestore();
    }
    expect(server.revision(ID)).toBe(2);
    expect((await outbox(browser)).map((r) => r.key)).toEqual([undefined]);
    expect(JSON.parse(browser.localStorage.getItem(MARKER)!)).toMatchObject({ patch: { title: "Sent at exit" } });
    server.write(ID, { title: "Theirs" });

    const again = await open(server, browser.tab());
    expect(again.status.pending).toBe(1);
    await settle();
    const marker = JSON.parse(browser.localStorage.getItem(MARKER)!);
    expect((await outbox(browser)).map((r) => r.key)).toEqual([marker.key]);
    await drive(again.flush());
    const [exit, resent] = server.patches();
    expect(exit!.keepalive).toBe(true);
    expect(key(resent!)).toBe(key(exit!));
    expect(resent!.body).toBe(exit!.body);
    expect(resent!.at - exit!.at).toBeGreaterThanOrEqual(2000);
    expect(resent!.status).toBe(200);
    expect(server.revision(ID)).toBe(3);
    expect(server.state(ID)).toEqual({ title: "Theirs" });
    expect(browser.localStorage.getItem(MARKER)).toBeNull();
    expect(again.status).toMatchObject({ state: "saved", pending: 0, revision: 3, conflicts: [] });
    expect(again.state).toEqual({ title: "Theirs" });
  });

  // The same exit, then the wall clock is stepped back an hour before the next load: the
  // marker's grace counts from that load, so the save goes out 2 s later, not an hour.
  test("page exit, death before IndexedDB seals, a clock stepped back: the next load still sends the marker's save after the grace", async () => {
    const { server, browser } = world({});
    const first = browser.tab();
    const saver = await open(server, first);
    await saver.edit({ title: "Sent at exit" });
    const original = IDBDatabase.prototype.transaction;
    const spy = vi.spyOn(IDBDatabase.prototype, "transaction").mockImplementation(function (
      this: IDBDatabase,
      names: string | string[],
      mode?: IDBTransactionMode,
      options?: IDBTransactionOptions,
    ) {
      const tx = original.call(this, names, mode, options);
      if (options?.durability === "strict") queueMicrotask(() => tx.abort()); // Never completes.
      return tx;
    });
    server.once((r) => r.method === "PATCH", "lost");
    try {
      first.window!.pagehide();
      die(first, server);
      await settle();
    } finally {
      spy.mockRestore();
    }
    server.write(ID, { title: "Theirs" });
    const fake = Date.now;
    const stepped = vi.spyOn(Date, "now").mockImplementation(() => fake() - 3_600_000);
    try {
      const again = await open(server, browser.tab());
      expect(again.status.pending).toBe(1);
      await elapse(1500);
      expect(server.patches()).toHaveLength(1);
      await elapse(1000);
      const [exit, resent] = server.patches();
      expect(key(resent!)).toBe(key(exit!));
      expect(resent!.status).toBe(200);
      await until(() => again.status.state === "saved");
    } finally {
      stepped.mockRestore();
    }
    expect(server.state(ID)).toEqual({ title: "Theirs" });
    expect(browser.localStorage.getItem(MARKER)).toBeNull();
  });

  // The keepalive save landed and nobody changed the document since: the next load reads
  // a state that already holds the edit, so the edit is neither shown as waiting nor sent.
  test("a save that landed before the next load knew (its answer lost) is not shown as pending there, nor sent again", async () => {
    const { server, browser } = world({});
    const first = browser.tab();
    const saver = await open(server, first);
    await saver.edit({ title: "Sent at exit" });
    server.once((r) => r.method === "PATCH", "lost");
    first.window!.pagehide();
    die(first, server);
    await settle();
    expect(server.revision(ID)).toBe(2);

    const again = await open(server, browser.tab());
    expect(again.status).toEqual({ state: "saved", pending: 0, revision: 2, conflicts: [], error: null, leader: true });
    await elapse(5000);
    expect(server.patches()).toHaveLength(1);
    expect(await outbox(browser)).toEqual([]);
    expect(browser.localStorage.getItem(MARKER)).toBeNull();
  });
});

describe("several tabs", () => {
  // One lock holder saves; the other tab's edits go through IndexedDB and a wake-up.
  test("only the leader sends; a follower's edits are sent by the leader; both tabs' status shows pending, then saved", async () => {
    const { server, browser } = world({});
    const [a, b] = [browser.tab(), browser.tab()];
    const leader = await open(server, a, { debounceMs: 500 });
    const follower = await open(server, b, { debounceMs: 500 });
    expect([leader.status.leader, follower.status.leader]).toEqual([true, false]);
    await follower.edit({ fromB: 1 });
    await settle();
    expect(leader.status.pending).toBe(1);
    expect(follower.status.pending).toBe(1);
    await leader.edit({ fromA: 1 });
    await drive(follower.flush());
    expect(server.patches().map((r) => [r.tab, r.json])).toEqual([[a.name, { fromB: 1, fromA: 1 }]]);
    await settle();
    expect(follower.status).toEqual({ state: "saved", pending: 0, revision: 2, conflicts: [], error: null, leader: false });
    expect(leader.status).toEqual({ state: "saved", pending: 0, revision: 2, conflicts: [], error: null, leader: true });
  });

  // close() on the leader: it saves what it has, lets go, and the next tab leads.
  test("closing the leader hands over: the next tab takes the lock and sends what is left; nothing is lost", async () => {
    const { server, browser } = world({});
    const [a, b] = [browser.tab(), browser.tab()];
    const leader = await open(server, a, { debounceMs: 500 });
    const follower = await open(server, b, { debounceMs: 500 });
    await follower.edit({ b1: 1 });
    await leader.edit({ a1: 1 });
    await drive(leader.close());
    await settle();
    expect(follower.status.leader).toBe(true);
    await expect(leader.edit({ late: true })).rejects.toThrow("closed");
    await follower.edit({ b2: 2 });
    await drive(follower.flush());
    expect(server.patches().map((r) => r.tab)).toEqual([a.name, b.name]);
    expect(server.state(ID)).toEqual({ b1: 1, a1: 1, b2: 2 });
    expect(follower.state).toEqual({ b1: 1, a1: 1, b2: 2 });
    expect(follower.status).toMatchObject({ state: "saved", revision: 3, leader: true });
    expect(server.maxInFlight.get(PATH)).toBe(1);
  });

  // The leader's page dies with a save on the wire: the next tab resends it, same key.
  test("a leader that dies with a save in flight: the next tab resends it under the same key, then the rest; nothing lost or doubled", async () => {
    const { server, browser } = world({});
    const [a, b] = [browser.tab(), browser.tab()];
    const leader = await open(server, a, { debounceMs: 100 });
    const follower = await open(server, b, { debounceMs: 100 });
    server.once((r) => r.method === "PATCH", "lost");
    await leader.edit({ a1: 1 });
    await until(() => server.patches().length === 1);
    await follower.edit({ b1: 1 });
    await settle();
    expect(follower.status.pending).toBe(2);
    die(a, server);
    await settle();
    expect(follower.status.leader).toBe(true);
    await drive(follower.flush());
    const [lost, resent, rest] = server.patches();
    expect(key(resent!)).toBe(key(lost!));
    expect([resent!.tab, rest!.tab]).toEqual([b.name, b.name]);
    expect(rest!.json).toEqual({ b1: 1 });
    expect(server.state(ID)).toEqual({ a1: 1, b1: 1 });
    expect(server.revision(ID)).toBe(3);
    expect(follower.status).toMatchObject({ state: "saved", pending: 0, revision: 3, leader: true });
  });

  // A lock manager that refuses every request (an opaque origin, a sandboxed frame): the
  // saver leads without a lock, as with none, rather than never saving.
  test("a lock manager that rejects the request: the saver leads without a lock and saves", async () => {
    const { server, browser } = world({});
    const locks = { request: () => Promise.reject(new DOMException("denied", "SecurityError")) };
    const saver = await open(server, browser.tab({ locks: false }), { debounceMs: 100, locks });
    expect(saver.status.leader).toBe(true);
    await saver.edit({ title: "Saved anyway" });
    await drive(saver.flush());
    expect(server.state(ID)).toEqual({ title: "Saved anyway" });
  });

  // Taking over fails (IndexedDB refuses the read): the tab is not the leader, the lock is
  // let go, and the next tab leads.
  test("a tab whose takeover fails is not the leader; the lock goes to the next tab", async () => {
    const { server, browser } = world({});
    const original = IDBDatabase.prototype.transaction;
    let reads = 0;
    const spy = vi.spyOn(IDBDatabase.prototype, "transaction").mockImplementation(function (
      this: IDBDatabase,
      names: string | string[],
      mode?: IDBTransactionMode,
      options?: IDBTransactionOptions,
    ) {
      // The second read of both stores is the takeover's (the first counts what is pending).
      if (Array.isArray(names) && names.length === 2 && mode === undefined && ++reads === 2) throw new DOMException("broken", "UnknownError");
      return original.call(this, names, mode, options);
    });
    let first;
    try {
      first = await open(server, browser.tab());
    } finally {
      spy.mockRestore();
    }
    expect(first.status.leader).toBe(false);
    const second = await open(server, browser.tab(), { debounceMs: 100 });
    expect(second.status.leader).toBe(true);
    await first.edit({ from: "first" });
    await drive(second.flush());
    expect(server.state(ID)).toEqual({ from: "first" });
  });

  // A page without Web Locks (plain http): every tab saves, so the page is warned, once per open; Node is not.
  test("a page without Web Locks warns once that every tab saves; a saver without a window (Node) does not", async () => {
    const { server, browser } = world({});
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    try {
      const saver = await open(server, browser.tab({ locks: false }));
      expect(saver.status.leader).toBe(true);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0]![0])).toMatch(/Web Locks.*one tab per document/);
      await drive(saver.close());
      await drive((await open(server, browser.tab({ page: false, locks: false }))).close());
      expect(warn).toHaveBeenCalledTimes(1);
    } finally {
      warn.mockRestore();
    }
  });

  // Node: no Web Locks, no window: this saver leads, and there is no page-exit path.
  test("without Web Locks or a window (Node), the saver leads and saves", async () => {
    const { server, browser } = world({});
    const saver = await open(server, browser.tab({ page: false, locks: false }), { debounceMs: 100 });
    expect(saver.status.leader).toBe(true);
    await saver.edit({ title: "From Node" });
    await drive(saver.close());
    expect(server.state(ID)).toEqual({ title: "From Node" });
  });
});

describe("document keys", () => {
  // One IndexedDB, one project id on two servers: two documents, never mixed.
  test("the document key holds the server's origin and the project id: two servers never share records", async () => {
    const one = new FakeLifeboat();
    const two = new FakeLifeboat();
    one.seed(ID, {});
    two.seed(ID, {});
    const browser = new FakeBrowser();
    const first = await AutoSaver.open(one.client("http://one.test"), ID, browser.tab().options({ debounceMs: 100 }));
    const second = await AutoSaver.open(two.client("http://two.test"), ID, browser.tab().options({ debounceMs: 100 }));
    expect([first.status.leader, second.status.leader]).toEqual([true, true]);
    one.offline = two.offline = true;
    await first.edit({ on: "one" });
    await second.edit({ on: "two" });
    expect((await outbox(browser, `http://one.test/api/v1${PATH}`)).map((r) => r.patch)).toEqual([{ on: "one" }]);
    expect((await outbox(browser, `http://two.test/api/v1${PATH}`)).map((r) => r.patch)).toEqual([{ on: "two" }]);
    expect([first.status.pending, second.status.pending]).toEqual([1, 1]);
    one.offline = two.offline = false;
    await drive(Promise.all([first.flush(), second.flush()]));
    expect([one.state(ID), two.state(ID)]).toEqual([{ on: "one" }, { on: "two" }]);
  });
});

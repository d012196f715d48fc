/**
 * The AutoSaver's IndexedDB database (`lifeboat` unless named otherwise), version 1:
 *
 * - `outbox` (key `id`, auto-increment; index `doc`): edits not yet acknowledged, one
 *   record per merge patch that could not be combined with the one before. Records of a
 *   document are applied in `id` order. A record with a `key` is sealed: it is sent with
 *   that `Idempotency-Key` and `If-Match: "<revision>"` until the server answers.
 * - `docs` (key `doc`): the server's state as this browser last knew it, so that a tab
 *   opened offline shows the document and knows the revision its edits are based on.
 *
 * `doc` is the project's URL (origin, `/api/v1/projects/`, id), so two servers or two
 * projects never share records.
 *
 * Plain IndexedDB with two promise helpers: a wrapper library would cost more bytes than
 * the AutoSaver's handful of requests, and would need the IDB classes as globals, which an
 * `indexedDB` passed in (Node, tests) does not provide.
 *
 * @module
 */

import type { JsonObject } from "./merge.js";

/** An `outbox` record: one merge patch of one document. */
export interface OutboxRecord {
  /** Its place in the outbox; set by IndexedDB when the record is added. */
  id?: number;
  /** The document key. */
  doc: string;
  /** The edits it holds, coalesced into one merge patch. */
  patch: JsonObject;
  /** How many edits it holds (the status's `pending` counts these). */
  edits: number;
  /** Once sealed: the `Idempotency-Key` it is sent with until acknowledged. */
  key?: string;
  /** Once sealed: the revision it is sent against (`If-Match`). */
  revision?: number;
}

/** A `docs` record: the server's state of a document at a revision. */
export interface DocRecord {
  doc: string;
  revision: number;
  state: unknown;
}

/** A request's result. Continuations run while its transaction is still active, so they may make further requests in it. */
export function result<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** Resolves when `tx` has committed; rejects if it aborted. */
export function committed(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onabort = () => reject(tx.error ?? new DOMException("the transaction was aborted", "AbortError"));
  });
}

/**
 * Runs `writes` in a read-write transaction on `stores`; resolves when it has committed
 * or failed. A failed write is not the caller's to handle: the edits are still in memory
 * and are saved from there.
 */
export function write(db: IDBDatabase, stores: string[], writes: (tx: IDBTransaction) => void, durability: IDBTransactionDurability = "default"): Promise<void> {
  const tx = db.transaction(stores, "readwrite", { durability });
  const done = committed(tx).catch(() => {});
  writes(tx);
  return done;
}

/** Opens (creating if need be) database `name` of `factory`. */
export function openOutbox(factory: IDBFactory, name: string): Promise<IDBDatabase> {
  const request = factory.open(name, 1);
  request.onupgradeneeded = () => {
    const db = request.result;
    db.createObjectStore("outbox", { keyPath: "id", autoIncrement: true }).createIndex("doc", "doc");
    db.createObjectStore("docs", { keyPath: "doc" });
  };
  return result(request);
}

/** The records of document `doc` in `outbox`'s index, in order. */
export function records(outbox: IDBObjectStore, doc: string): Promise<OutboxRecord[]> {
  return result(outbox.index("doc").getAll(doc));
}

/** A document's outbox records (in order) and its last known server state. */
export async function load(db: IDBDatabase, doc: string): Promise<{ records: OutboxRecord[]; known: DocRecord | undefined }> {
  const tx = db.transaction(["outbox", "docs"]);
  const [found, known] = await Promise.all([records(tx.objectStore("outbox"), doc), result<DocRecord | undefined>(tx.objectStore("docs").get(doc))]);
  return { records: found, known };
}

/** Keeps `record` as the document's known state, unless a newer revision is kept already. */
export async function keepDoc(db: IDBDatabase, record: DocRecord): Promise<void> {
  const tx = db.transaction("docs", "readwrite");
  const docs = tx.objectStore("docs");
  const kept = result<DocRecord | undefined>(docs.get(record.doc)).then((kept) => {
    if (!kept || kept.revision <= record.revision) docs.put(record);
  });
  await Promise.all([kept, committed(tx)]);
}

/** The known state of document `doc` (its `docs` record), if this browser has one. */
export function findDoc(db: IDBDatabase, doc: string): Promise<DocRecord | undefined> {
  return result<DocRecord | undefined>(db.transaction("docs").objectStore("docs").get(doc));
}

/**
 * The recovery API (SPEC §2 "Recovery assessment", §7 "Recovery"): which sessions crashed
 * and can be recovered, how, and the calls that recover or discard them.
 *
 * It is what the `<lifeboat-recovery>` element and `useRecoverable` use, and what an
 * application that draws its own prompt calls. It works with a tenant key or with a
 * project token (`lbp_…`), which sees only its project's sessions.
 *
 * @module
 */

import type { components } from "./api.js";
import { type CallOptions, type Client, uuidv7 } from "./client.js";

/** A session object (SPEC §7). */
export type SessionBody = components["schemas"]["SessionBody"];
/** A stored checkpoint. */
export type CheckpointBody = components["schemas"]["CheckpointBody"];
/** One recoverable session, assessed: `GET /sessions/{id}/recovery`, and each item of `GET /recovery` (without `options`). */
export type RecoveryBody = components["schemas"]["RecoveryBody"];
/** One way to recover a session, as `GET /sessions/{id}/recovery` offers it. */
export type OptionBody = components["schemas"]["OptionBody"];
/** The answer to a recovery: the session at its new attempt, and where to continue from. */
export type Recovered = components["schemas"]["Recovered"];
/** A page of `GET /recovery`. */
export type RecoverablePage = components["schemas"]["List_RecoveryBody"];

/** How a crashed session continues (SPEC §2 "recover"). */
export type RecoveryOption = "continue" | "restart_batch" | "fresh_start";

/** What `listRecoverable` asks for. */
export interface ListRecoverableOptions extends CallOptions {
  /** Only sessions of this project (a project token sees only its own either way). */
  projectId?: string;
  /** Page size, 1–1000 (the server's default is 50). */
  limit?: number;
  /** `next_cursor` of the previous page. */
  cursor?: string;
}

/** What `recover` may add. */
export interface RecoverOptions extends CallOptions {
  /** Needed for `fresh_start` and past the session's `max_attempts` (SPEC §2). */
  confirm?: boolean;
}

/** `GET /recovery`: recoverable sessions (incomplete, failed, paused), newest first, each assessed. */
export function listRecoverable(client: Client, options: ListRecoverableOptions = {}): Promise<RecoverablePage> {
  const { projectId, limit, cursor, ...call } = options;
  const query = new URLSearchParams();
  if (projectId !== undefined) query.set("project_id", projectId);
  if (limit !== undefined) query.set("limit", String(limit));
  if (cursor !== undefined) query.set("cursor", cursor);
  const search = String(query);
  return client.json("GET", search ? `/recovery?${search}` : "/recovery", call);
}

/** How many recoverable sessions a prompt lists by default: it is a prompt, not a dashboard. */
export const RECOVERY_ITEMS_MAX = 20;

/**
 * The first page of `GET /recovery` (at most `RECOVERY_ITEMS_MAX` unless `limit` says
 * otherwise), each item read again with `getRecovery` for its `options` (the list has none,
 * and `restart_batch` is offered only sometimes). An item whose assessment cannot be read
 * stays as listed, without options.
 */
export async function recoverableWithOptions(client: Client, options: ListRecoverableOptions = {}): Promise<RecoveryBody[]> {
  const page = await listRecoverable(client, { limit: RECOVERY_ITEMS_MAX, ...options });
  const { signal } = options;
  const call: CallOptions = signal === undefined ? {} : { signal };
  return Promise.all(page.items.map((item) => getRecovery(client, item.session.id, call).catch(() => item)));
}

/** `GET /sessions/{id}/recovery`: the assessment with its `options`. */
export function getRecovery(client: Client, sessionId: string, options: CallOptions = {}): Promise<RecoveryBody> {
  return client.json("GET", `${sessionPath(sessionId)}/recovery`, options);
}

/**
 * `POST /sessions/{id}/recover`: makes the session active again at a new attempt (which
 * fences every writer of the old one). Safe to retry: one `Idempotency-Key` for all attempts.
 */
export function recover(
  client: Client,
  sessionId: string,
  option: RecoveryOption,
  options: RecoverOptions = {},
): Promise<Recovered> {
  const { confirm, ...call } = options;
  const json = confirm === undefined ? { option } : { option, confirm };
  return client.json("POST", `${sessionPath(sessionId)}/recover`, {
    ...call,
    json,
    idempotencyKey: call.idempotencyKey ?? uuidv7(),
  });
}

/**
 * Discards a session: `POST /sessions/{id}/cancel`. Answers the cancelled session. Pass the
 * `attempt` the prompt listed: if another worker recovered the session since, the server
 * answers 409 instead of cancelling that live attempt. Without it, an operator's cancel.
 */
export function discard(client: Client, sessionId: string, attempt?: number, options: CallOptions = {}): Promise<SessionBody> {
  return client.json("POST", `${sessionPath(sessionId)}/cancel`, {
    ...options,
    json: { attempt },
    idempotencyKey: options.idempotencyKey ?? uuidv7(),
  });
}

/** `/sessions/{id}`, the id encoded. */
export function sessionPath(id: string): string {
  return `/sessions/${encodeURIComponent(id)}`;
}

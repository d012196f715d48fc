/**
 * What the recovery prompt says and offers, as pure functions of a recovery assessment:
 * "5 minutes ago", "about 3 min of work", which buttons each session gets. Kept apart
 * from the element so they can be tested without a DOM.
 *
 * The wording is English; an application that needs another language draws its own
 * prompt with the recovery API.
 *
 * @module
 */

import type { RecoveryBody, RecoveryOption } from "./recovery-api.js";

/** What a button of the prompt does: one of the offered recovery options, or discarding. */
export type Choice = RecoveryOption | "discard";

/** A button of the prompt. */
export interface Action {
  choice: Choice;
  /** Its visible label. */
  label: string;
  /** Whether it asks first, in an inner dialog (and then sends `"confirm": true`). */
  confirm: boolean;
}

/** The most missing files named before "and N more". */
const MISSING_NAMED_MAX = 5;

const LABELS: Record<Choice, string> = {
  continue: "Continue",
  restart_batch: "Restart batch",
  fresh_start: "Start fresh",
  discard: "Discard",
};

const CRASHES: Record<string, string> = {
  client_lost: "It stopped responding",
  network: "The connection was lost",
  out_of_memory: "It ran out of memory",
  application_error: "It stopped with an error",
  server_restart: "The server restarted",
};

/**
 * The buttons for one session, in the order the server offers the options: `Restart batch`
 * only when it is offered, `Start fresh` always asking first, then `Discard` (asking first).
 * Without `options` (an item of `GET /recovery`), `Continue` when `can_recover`, and `Start fresh`.
 */
export function actionsFor(item: Pick<RecoveryBody, "options" | "can_recover">): Action[] {
  const offered =
    item.options ??
    [
      { option: "continue", requires_confirmation: false },
      { option: "fresh_start", requires_confirmation: true },
    ].filter((o) => o.option !== "continue" || item.can_recover);
  const actions: Action[] = [];
  for (const { option, requires_confirmation } of offered) {
    if (!(option in LABELS) || option === "discard") continue; // An option this prompt does not know is not offered.
    const choice = option as RecoveryOption;
    actions.push({ choice, label: LABELS[choice], confirm: requires_confirmation || choice === "fresh_start" });
  }
  actions.push({ choice: "discard", label: LABELS.discard, confirm: true });
  return actions;
}

/** The question of the inner confirm dialog, about the session titled `title`. */
export function confirmQuestion(choice: Choice, title: string): string {
  if (choice === "discard") return `Discard “${title}”? It cannot be recovered afterwards.`;
  if (choice === "fresh_start") return `Start “${title}” fresh? Its saved progress will not be used.`;
  return `“${title}” has been recovered many times already. ${LABELS[choice]} anyway?`;
}

/** What to call a session: its title, else its kind, else its id. */
export function titleOf(item: Pick<RecoveryBody, "session">): string {
  return item.session.title || item.session.kind || item.session.id;
}

/** "just now", "1 minute ago", "5 hours ago", "3 days ago"; empty for a time that does not parse. */
export function timeAgo(iso: string, nowMs: number): string {
  const thenMs = Date.parse(iso);
  if (Number.isNaN(thenMs)) return "";
  const seconds = Math.max(0, (nowMs - thenMs) / 1000);
  if (seconds < 45) return "just now";
  const [count, unit] =
    seconds < 45 * 60 ? [seconds / 60, "minute"] : seconds < 22 * 3600 ? [seconds / 3600, "hour"] : [seconds / 86_400, "day"];
  const n = Math.max(1, Math.round(count));
  return `${n} ${unit}${n === 1 ? "" : "s"} ago`;
}

/** The work a `continue` redoes, for people: "none", "less than a minute of work", "about 3 min of work", "about 2 h of work". */
export function workLostText(workLostMs: number): string {
  if (workLostMs <= 0) return "none";
  const minutes = workLostMs / 60_000;
  if (minutes < 1) return "less than a minute of work";
  if (minutes < 59.5) return `about ${Math.round(minutes)} min of work`;
  const hours = minutes / 60;
  if (hours < 47.5) return `about ${Math.round(hours)} h of work`;
  return `about ${Math.round(hours / 24)} days of work`;
}

/** Confidence in words and percent: "high (92%)", "medium (60%)", "low (25%)", "none (0%)". */
export function confidenceText(confidence: number): string {
  const percent = Math.round(confidence * 100);
  const word = confidence >= 0.9 ? "high" : confidence >= 0.5 ? "medium" : confidence > 0 ? "low" : "none";
  return `${word} (${percent}%)`;
}

/** Why the session stopped: its crash type in words, or "Paused". */
export function crashText(item: Pick<RecoveryBody, "crash" | "session">): string {
  const type = item.crash?.type;
  if (type !== undefined && type in CRASHES) return CRASHES[type]!;
  return item.session.status === "paused" ? "Paused" : "It stopped";
}

/** The first line under a session's title: when it was last saved and why it stopped. */
export function savedLine(item: Pick<RecoveryBody, "last_saved_at" | "crash" | "session">, nowMs: number): string {
  const saved = item.last_saved_at ? `Last saved ${timeAgo(item.last_saved_at, nowMs)}` : "Not saved yet";
  return `${saved} · ${crashText(item)}`;
}

/** The second line: confidence and work lost. */
export function assessmentLine(item: Pick<RecoveryBody, "confidence" | "work_lost_ms">): string {
  return `Confidence: ${confidenceText(item.confidence)} · Work lost: ${workLostText(item.work_lost_ms)}`;
}

/** The missing or corrupt files by name ("a.wav, b.png and 3 more"), or empty when there are none. */
export function missingText(names: readonly string[]): string {
  if (names.length === 0) return "";
  const named = names.slice(0, MISSING_NAMED_MAX).join(", ");
  const more = names.length - MISSING_NAMED_MAX;
  return `Missing or damaged files: ${named}${more > 0 ? ` and ${more} more` : ""}`;
}

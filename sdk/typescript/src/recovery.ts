/**
 * `@lifeboat/client/recovery`: `<lifeboat-recovery>`, a framework-free custom element that
 * asks the user what to do with work that crashed.
 *
 * It lists the recoverable sessions (`GET /recovery?project_id=`, then each one's options)
 * and opens as a modal `<dialog>` in its shadow DOM only when there is something to
 * recover. Each session offers Continue, Restart batch (when offered), Start fresh and
 * Discard; the last two ask first in an inner dialog. The application resumes its work
 * from the `lifeboat-recovered` event.
 *
 * Importing this module defines nothing: call `defineRecoveryElement()`. It is safe to
 * import where there is no DOM (server rendering): the class then extends a stand-in.
 *
 * @module
 */

import { Client } from "./client.js";
import { type RecoveryBody, type SessionBody, discard, recover, recoverableWithOptions } from "./recovery-api.js";
import { type Action, actionsFor, assessmentLine, confirmQuestion, missingText, savedLine, titleOf } from "./recovery-text.js";

export type { Action, Choice } from "./recovery-text.js";

/** `lifeboat-recovered`'s detail: the session, now active at a new attempt, and where to continue from. */
export interface RecoveredDetail {
  sessionId: string;
  option: "continue" | "restart_batch" | "fresh_start";
  session: SessionBody;
  /** The checkpoint to resume from; null: from the beginning. */
  resumeFrom: RecoveryBody["resume_from"] | null;
}

/** `lifeboat-discarded`'s detail. */
export interface DiscardedDetail {
  sessionId: string;
}

const STYLE = `:host{--a:var(--lifeboat-accent,#2457d6);--b:var(--lifeboat-bg,#fff);--f:var(--lifeboat-fg,#1f2328);--r:var(--lifeboat-radius,12px);--l:color-mix(in srgb,var(--f) 22%,transparent);font-family:var(--lifeboat-font,system-ui,sans-serif)}
@media (prefers-color-scheme:dark){:host{--a:var(--lifeboat-accent,#8ab0ff);--b:var(--lifeboat-bg,#1d1f23);--f:var(--lifeboat-fg,#e8e8ea)}}
dialog{background:var(--b);color:var(--f);border:1px solid var(--l);border-radius:var(--r);padding:1.25rem;width:min(34rem,calc(100vw - 2rem));font:inherit;line-height:1.4}
dialog::backdrop{background:#0008}
h2{margin:0;font-size:1.25rem}h3{margin:0;font-size:1rem}p{margin:.25rem 0}
ul{list-style:none;margin:1rem 0;padding:0;display:grid;gap:.75rem;max-height:60vh;overflow:auto}
li{border:1px solid var(--l);border-radius:calc(var(--r)*.7);padding:.75rem}
.d{font-size:.9em;opacity:.85}
.x{display:flex;flex-wrap:wrap;gap:.5rem;margin-top:.5rem;justify-content:flex-end}
button{font:inherit;padding:.4rem .85rem;border-radius:calc(var(--r)*.5);border:1px solid var(--a);background:none;color:inherit;cursor:pointer}
button.p{background:var(--a);color:var(--b)}
button:focus-visible{outline:2px solid var(--a);outline-offset:2px}
button:disabled{opacity:.5;cursor:wait}
[role=alert]:empty{display:none}[role=alert]{color:#d33}`;

// Without a DOM (Node, server rendering) the class extends a stand-in, so importing never throws.
const Base = (globalThis.HTMLElement ?? class {}) as typeof HTMLElement;

/**
 * `<lifeboat-recovery base-url="…" token="lbp_…" project-id="…">`, or with the `client`
 * property instead of `base-url` and `token`.
 *
 * Events (bubbling, composed): `lifeboat-recovered` (`RecoveredDetail`), `lifeboat-discarded`
 * (`DiscardedDetail`), `lifeboat-empty` when a refresh finds nothing to recover, and
 * `lifeboat-error` (`{error}`) when the list cannot be read.
 */
export class LifeboatRecovery extends Base {
  static observedAttributes = ["base-url", "token", "project-id"];

  #client: Client | null = null;
  /** The `client` property: wins over `base-url` and `token`. */
  #given: Client | null = null;
  #generation = 0;
  #scheduled = false;
  #returnFocus: HTMLElement | null = null;
  #onYes: (() => void) | null = null;
  readonly #dialog: HTMLDialogElement;
  readonly #list: HTMLUListElement;
  readonly #error: HTMLParagraphElement;
  readonly #confirm: HTMLDialogElement;
  readonly #question: HTMLParagraphElement;
  readonly #yes: HTMLButtonElement;

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    const style = h("style");
    style.textContent = STYLE;
    this.#list = h("ul", { part: "list" });
    this.#error = h("p", { part: "error", role: "alert", "aria-live": "assertive" });
    this.#question = h("p", { id: "q", part: "question" });
    this.#yes = button(
      "",
      "button confirm-yes",
      () => {
        const yes = this.#onYes;
        this.#confirm.close();
        yes?.();
      },
      { class: "p" },
    );
    this.#confirm = h(
      "dialog",
      { part: "confirm", "aria-labelledby": "q" },
      this.#question,
      h("div", { class: "x" }, button("Cancel", "button confirm-cancel", () => this.#confirm.close()), this.#yes),
    );
    this.#dialog = h(
      "dialog",
      { part: "dialog", "aria-labelledby": "t", "aria-describedby": "s" },
      h("h2", { id: "t", part: "title" }, "Recover unsaved work"),
      h("p", { id: "s", part: "description" }, "Some work stopped before it was finished. Choose what to do with it."),
      this.#list,
      this.#error,
      h("div", { class: "x" }, button("Not now", "button close", () => this.#dialog.close())),
      this.#confirm,
    );
    this.#dialog.addEventListener("keydown", (event) => this.#trapTab(event));
    this.#dialog.addEventListener("close", () => {
      this.#returnFocus?.focus();
      this.#returnFocus = null;
    });
    root.append(style, this.#dialog);
  }

  /** The client in use; setting it refreshes the list. */
  get client(): Client | null {
    return this.#given ?? this.#client;
  }

  set client(client: Client | null) {
    this.#given = client;
    this.#schedule();
  }

  connectedCallback(): void {
    this.#schedule();
  }

  disconnectedCallback(): void {
    this.#generation += 1; // Answers still on their way are for a prompt that is gone.
    this.#dialog.close();
  }

  attributeChangedCallback(): void {
    this.#client = null;
    this.#schedule();
  }

  /**
   * Reads the recoverable sessions again: opens the prompt if there are any, closes it and
   * fires `lifeboat-empty` if there are none. Never rejects: a failure is shown in the
   * prompt (if open) and fired as `lifeboat-error`.
   */
  async refresh(): Promise<void> {
    const generation = ++this.#generation;
    const client = this.#currentClient();
    if (client === null) return;
    const projectId = this.getAttribute("project-id") ?? undefined;
    try {
      const items = await recoverableWithOptions(client, projectId === undefined ? {} : { projectId });
      if (generation !== this.#generation) return;
      this.#render(items);
    } catch (error) {
      if (generation !== this.#generation) return;
      this.#showError(error);
      this.#emit("lifeboat-error", { error });
    }
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    // Attributes set one after another (or by the parser) make one refresh.
    queueMicrotask(() => {
      this.#scheduled = false;
      if (this.isConnected) void this.refresh();
    });
  }

  #currentClient(): Client | null {
    if (this.#given !== null) return this.#given;
    const baseUrl = this.getAttribute("base-url");
    const token = this.getAttribute("token");
    if (baseUrl === null || token === null) return null;
    this.#client ??= new Client({ baseUrl, token });
    return this.#client;
  }

  #render(items: RecoveryBody[]): void {
    this.#list.replaceChildren(...items.map((item, i) => this.#item(item, i)));
    this.#error.textContent = "";
    if (items.length === 0) {
      this.#dialog.close();
      this.#emit("lifeboat-empty", {});
      return;
    }
    if (!this.#dialog.open) {
      this.#returnFocus = deepActiveElement();
      this.#dialog.showModal();
    }
    this.#focusFirst();
  }

  #item(item: RecoveryBody, i: number): HTMLLIElement {
    const titleId = `i${i}`;
    const title = titleOf(item);
    const buttons = actionsFor(item).map((action) =>
      button(action.label, `button ${action.choice.replace("_", "-")}`, () => this.#choose(li, item, action, title), {
        "aria-describedby": titleId,
        class: action.choice === "continue" ? "p" : "",
      }),
    );
    const missing = missingText(item.missing_assets);
    const li = h(
      "li",
      { part: "item", "aria-labelledby": titleId },
      h("h3", { id: titleId, part: "item-title" }, title),
      h("p", { part: "details", class: "d" }, savedLine(item, Date.now())),
      h("p", { part: "details", class: "d" }, assessmentLine(item)),
      ...(missing ? [h("p", { part: "missing", class: "d" }, missing)] : []),
      h("div", { part: "actions", class: "x" }, ...buttons),
    );
    return li;
  }

  #choose(li: HTMLLIElement, item: RecoveryBody, action: Action, title: string): void {
    if (!action.confirm) return void this.#act(li, item, action);
    this.#question.textContent = confirmQuestion(action.choice, title);
    this.#yes.textContent = action.label;
    this.#onYes = () => void this.#act(li, item, action);
    this.#confirm.showModal();
    this.#confirm.querySelector("button")?.focus(); // Cancel: the safe answer comes first.
  }

  async #act(li: HTMLLIElement, item: RecoveryBody, action: Action): Promise<void> {
    const client = this.#currentClient();
    const sessionId = item.session.id;
    if (client === null) return;
    const buttons = li.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    li.setAttribute("aria-busy", "true");
    this.#error.textContent = "";
    try {
      let event: [string, RecoveredDetail | DiscardedDetail];
      if (action.choice === "discard") {
        await discard(client, sessionId, item.session.attempt);
        event = ["lifeboat-discarded", { sessionId }];
      } else {
        const recovered = await recover(client, sessionId, action.choice, action.confirm ? { confirm: true } : {});
        const detail = { sessionId, option: action.choice, session: recovered.session, resumeFrom: recovered.resume_from ?? null };
        event = ["lifeboat-recovered", detail];
      }
      li.remove();
      if (this.#list.childElementCount === 0) this.#dialog.close();
      else this.#focusFirst();
      this.#emit(...event);
    } catch (error) {
      this.#showError(error);
      buttons.forEach((b) => (b.disabled = false));
      li.removeAttribute("aria-busy");
    }
  }

  #showError(error: unknown): void {
    const detail = (error as { detail?: unknown }).detail;
    this.#error.textContent = `Something went wrong: ${typeof detail === "string" && detail ? detail : String(error)}`;
  }

  #emit(type: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }

  /** Focus to the first button of the list, unless it is already inside the prompt. */
  #focusFirst(): void {
    const active = this.shadowRoot?.activeElement;
    if (active && active.isConnected && this.#dialog.contains(active)) return;
    this.#list.querySelector("button")?.focus();
  }

  /** Tab and Shift+Tab cycle through the buttons of the open dialog (the inner one when it is open). */
  #trapTab(event: KeyboardEvent): void {
    if (event.key !== "Tab") return;
    const scope = this.#confirm.open ? this.#confirm : this.#dialog;
    const buttons = Array.from(scope.querySelectorAll("button")).filter((b) => !b.disabled && (scope === this.#confirm || !this.#confirm.contains(b)));
    const first = buttons[0];
    const last = buttons[buttons.length - 1];
    const active = this.shadowRoot?.activeElement;
    if (first === undefined || last === undefined) return;
    const leaving = !active || !buttons.includes(active as HTMLButtonElement) || active === (event.shiftKey ? first : last);
    if (!leaving) return;
    event.preventDefault();
    (event.shiftKey ? last : first).focus();
  }
}

/**
 * Defines `<lifeboat-recovery>` (or `name`) once; later calls, and a name already taken by
 * this class, do nothing. Answers the class.
 */
export function defineRecoveryElement(name = "lifeboat-recovery"): typeof LifeboatRecovery {
  if (!customElements.get(name)) customElements.define(name, name === "lifeboat-recovery" ? LifeboatRecovery : class extends LifeboatRecovery {});
  return LifeboatRecovery;
}

declare global {
  interface HTMLElementTagNameMap {
    "lifeboat-recovery": LifeboatRecovery;
  }
  interface HTMLElementEventMap {
    "lifeboat-recovered": CustomEvent<RecoveredDetail>;
    "lifeboat-discarded": CustomEvent<DiscardedDetail>;
    "lifeboat-empty": CustomEvent<Record<string, never>>;
    "lifeboat-error": CustomEvent<{ error: unknown }>;
  }
}

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) if (value) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

function button(label: string, part: string, onClick: () => void, attributes: Record<string, string> = {}): HTMLButtonElement {
  const element = h("button", { type: "button", part, ...attributes }, label);
  element.addEventListener("click", onClick);
  return element;
}

/** The focused element, looking inside shadow roots. */
function deepActiveElement(): HTMLElement | null {
  let active = document.activeElement;
  while (active?.shadowRoot?.activeElement) active = active.shadowRoot.activeElement;
  return active instanceof HTMLElement ? active : null;
}

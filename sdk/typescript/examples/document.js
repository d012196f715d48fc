// The document page: a title and a text bound to an AutoSaver, and a status line that says
// where the edits are. Query parameters (all optional): `doc` (the project id, default
// "essay"), `debounce` and `maxwait` (ms), `keepalive` (bytes).
//
// Tests drive it through `window.lifeboatTest`; a person just types.

import { AutoSaver, Client } from "/sdk/index.js";

const params = new URLSearchParams(location.search);
const projectId = params.get("doc") ?? "essay";
const number = (name) => (params.has(name) ? Number(params.get(name)) : undefined);

const statusLine = document.getElementById("status");
const detailLine = document.getElementById("detail");
const dismissButton = document.getElementById("dismiss");
const fields = [...document.querySelectorAll("#doc [name]")];

/** The token comes from the application's backend; the last one is kept for offline starts. */
async function projectToken() {
  const cacheKey = `lifeboat-token:${projectId}`;
  try {
    const response = await fetch(`/app/project-token?project=${encodeURIComponent(projectId)}`);
    if (!response.ok) throw new Error(`token endpoint: ${response.status}`);
    const minted = await response.json();
    localStorage.setItem(cacheKey, JSON.stringify(minted));
    return minted.token;
  } catch (error) {
    const cached = JSON.parse(localStorage.getItem(cacheKey) ?? "null");
    if (cached && Date.parse(cached.expires_at) > Date.now()) return cached.token;
    throw error;
  }
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

/** The words of the status line for an AutoSaver status. */
export function describe(status) {
  switch (status.state) {
    case "saving":
      return "Saving…";
    case "saved":
      return status.pending > 0 ? `Saved — ${plural(status.pending, "edit", "edits")} waiting` : "Saved";
    case "idle":
      return status.pending > 0 ? `Unsaved — ${plural(status.pending, "edit", "edits")} waiting` : "Saved";
    case "offline":
      return `Offline — ${plural(status.pending, "edit", "edits")} waiting`;
    case "conflict":
      return `Conflict on ${status.conflicts.join(", ") || "this document"}`;
    case "error":
      // Pending edits: the server answered with an error and saving goes on trying; none: a save was refused.
      return status.pending > 0
        ? `Server error — retrying, ${plural(status.pending, "edit", "edits")} waiting`
        : `Not saved: ${status.error ?? "the server refused the edit"}`;
    default:
      return String(status.state);
  }
}

function render(status) {
  statusLine.textContent = describe(status);
  statusLine.dataset.state = status.state;
  statusLine.dataset.pending = String(status.pending);
  const parts = [];
  if (status.revision !== null && status.revision !== undefined) parts.push(`revision ${status.revision}`);
  parts.push(status.leader ? "this tab saves" : "another tab saves");
  if (status.state === "error" && status.error) parts.push(status.error);
  if (status.state === "conflict") parts.push("your edit was saved over another writer's change; theirs is in the history");
  detailLine.textContent = parts.join(" · ");
  dismissButton.hidden = status.conflicts.length === 0;
}

async function main() {
  const apiBase = (await (await fetch("/app/config")).json()).apiBase;
  const client = new Client({ baseUrl: apiBase, token: await projectToken() });
  const options = {};
  if (number("debounce") !== undefined) options.debounceMs = number("debounce");
  if (number("maxwait") !== undefined) options.maxWaitMs = number("maxwait");
  if (number("keepalive") !== undefined) options.keepaliveBytes = number("keepalive");
  const saver = await AutoSaver.open(client, projectId, options);

  const state = saver.state ?? {};
  for (const field of fields) {
    if (typeof state[field.name] === "string") field.value = state[field.name];
    field.disabled = false;
    field.addEventListener("input", () => void saver.edit({ [field.name]: field.value }));
  }
  dismissButton.addEventListener("click", () => saver.clearConflicts());
  saver.onStatus(render);
  render(saver.status);

  window.lifeboatTest = {
    ready: true,
    saver,
    /** Sets `field` to `value` (the input too, when there is one) and waits until the edit is in IndexedDB. */
    async edit(field, value) {
      const input = fields.find((f) => f.name === field);
      if (input) input.value = value;
      await saver.edit({ [field]: value });
    },
    /** Applies a whole merge patch. */
    patch: (patch) => saver.edit(patch),
    status: () => JSON.parse(JSON.stringify(saver.status, (k, v) => (v instanceof Error ? v.message : v))),
    text: () => statusLine.textContent,
  };
}

main().catch((error) => {
  statusLine.textContent = `Could not start: ${error.message}`;
  statusLine.dataset.state = "error";
  console.error(error);
  window.lifeboatTest = { ready: false, failed: String(error?.stack ?? error) };
});

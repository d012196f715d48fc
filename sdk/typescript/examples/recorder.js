// The recorder page: a session the application's backend creates (with the document as its
// project) and hands to the page with a session token (`lbs_…`, good for one attempt).
// The page heartbeats and checkpoints each "chunk". When the lease is lost it stops; the
// `<lifeboat-recovery>` element (with a project token) lists the document's recoverable
// sessions, and Continue starts the next attempt from the last checkpoint.
//
// Query parameters: `doc` (project id, default "essay"), `session` (session id, default
// "<doc>-recording"), `timeout` (heartbeat timeout in ms, default 30000), `tick` (ms between
// chunks; 0: only when the test hook says so; default 1000).

import { Client, LifeboatError, attachSession } from "/sdk/index.js";
import { defineRecoveryElement } from "/sdk/recovery.js";

const params = new URLSearchParams(location.search);
const projectId = params.get("doc") ?? "essay";
const sessionId = params.get("session") ?? `${projectId}-recording`;
const timeoutMs = Number(params.get("timeout") ?? "30000");
const tickMs = Number(params.get("tick") ?? "1000");

const statusLine = document.getElementById("status");
const detailLine = document.getElementById("detail");
const prompt = document.getElementById("prompt");
const startButton = document.getElementById("start");
const recoverButton = document.getElementById("recover");

const say = (state, text, detail = "") => {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
  detailLine.textContent = detail;
};

const test = {
  ready: false,
  handle: null,
  leaseLost: 0,
  chunk: 0,
  tokens: [],
  recovered: [],
  discarded: [],
  errors: [],
};
window.lifeboatTest = test;

let apiBase;
let timer = null;

async function backend(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

/** Holds `session` with `token`: heartbeats start; checkpoints follow every tick. */
function hold(session, token) {
  const client = new Client({ baseUrl: apiBase, token });
  const handle = attachSession(client, session);
  test.handle = handle;
  test.tokens.push({ attempt: session.attempt, token });
  handle.onLeaseLost(() => {
    if (handle !== test.handle) return;
    test.leaseLost += 1;
    stopTicking();
    say("error", "Recording stopped: this attempt lost its lease", `the last saved chunk is ${test.chunk}; recover to go on`);
  });
  say("saving", `Recording — attempt ${session.attempt}`, `chunk ${test.chunk}`);
  if (tickMs > 0) timer = setInterval(() => void test.checkpoint().catch(() => {}), tickMs);
  return handle;
}

function stopTicking() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

/** Writes the next chunk's checkpoint and answers its seq. */
test.checkpoint = async () => {
  const handle = test.handle;
  const chunk = test.chunk + 1;
  try {
    const seq = await handle.checkpoint({ kind: "item", data: { chunk }, position: chunk, completedUnits: chunk });
    if (handle === test.handle) test.chunk = chunk;
    detailLine.textContent = `chunk ${chunk} saved (checkpoint ${seq})`;
    return seq;
  } catch (error) {
    test.errors.push(String(error?.message ?? error));
    throw error;
  }
};

test.start = async () => {
  const { session, token } = await backend(
    `/app/session?project=${encodeURIComponent(projectId)}&id=${encodeURIComponent(sessionId)}&heartbeat_timeout_ms=${timeoutMs}`,
  );
  return hold(session, token).attempt;
};

/** A raw write naming an attempt, with a given token: what a stale worker would send. */
test.rawCheckpoint = async (token, attempt) => {
  const client = new Client({ baseUrl: apiBase, token });
  try {
    await client.requestOnce("POST", `/sessions/${encodeURIComponent(sessionId)}/checkpoints`, {
      json: { attempt, kind: "item", data: { stale: true } },
    });
    return { status: 201 };
  } catch (error) {
    if (error instanceof LifeboatError) return { status: error.status, slug: error.slug };
    throw error;
  }
};

/** Points the recovery prompt at the document (a project token: it sees that project's sessions only). */
test.showRecovery = async () => {
  const { token } = await backend(`/app/project-token?project=${encodeURIComponent(projectId)}`);
  prompt.setAttribute("base-url", apiBase);
  prompt.setAttribute("project-id", projectId);
  prompt.setAttribute("token", token);
  if (typeof prompt.refresh === "function") await prompt.refresh();
  if (typeof prompt.open === "function") await prompt.open();
};

async function main() {
  apiBase = (await backend("/app/config")).apiBase;
  defineRecoveryElement();
  await customElements.whenDefined("lifeboat-recovery");

  prompt.addEventListener("lifeboat-recovered", async (event) => {
    const { sessionId: id, option, session, resumeFrom } = event.detail;
    test.recovered.push({ sessionId: id, option, attempt: session?.attempt, resumeFromSeq: resumeFrom?.seq ?? null });
    // The session token of the old attempt is fenced; the backend makes one for the new attempt.
    const { token } = await backend(`/app/session-token?id=${encodeURIComponent(id)}`);
    test.chunk = resumeFrom?.data?.chunk ?? 0;
    hold(session, token);
    say("saving", `Recording — attempt ${session.attempt}, resumed`, `from chunk ${test.chunk} (${option})`);
  });
  prompt.addEventListener("lifeboat-discarded", (event) => {
    test.discarded.push(event.detail);
    say("idle", "Session discarded", "");
  });

  startButton.addEventListener("click", () => void test.start().catch((e) => say("error", `Could not start: ${e.message}`)));
  recoverButton.addEventListener("click", () => void test.showRecovery().catch((e) => say("error", `Could not load: ${e.message}`)));
  test.ready = true;
}

main().catch((error) => {
  say("error", `Could not start: ${error.message}`);
  console.error(error);
  test.failed = String(error?.stack ?? error);
});

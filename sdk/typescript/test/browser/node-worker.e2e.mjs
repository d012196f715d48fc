// A worker written in TypeScript, running in Node (not a browser), against the real
// binary: `resumeOrStart` starts a 3-stage job whose stages each take longer than the
// lease (only heartbeats keep it alive), the worker process is SIGKILLed after stage 2, a
// second process resumes from the last checkpoint (attempt 2) and finishes, and exits on
// its own (the heartbeat timer never keeps Node alive).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { bounded, sdkRoot, setup, waitFor } from "./harness.mjs";

let h;
let sdkFile;
before(async () => {
  h = await setup({ name: "node-worker" });
  const esbuild = await import("esbuild");
  sdkFile = join(h.tmp, "sdk.mjs");
  await esbuild.build({
    entryPoints: [join(sdkRoot, "src", "index.ts")],
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    outfile: sdkFile,
    logLevel: "silent",
  });
});
after(async () => {
  await h?.stop();
});

/** The worker: every stage takes `stageMs` (longer than the 1 s lease) and is checkpointed. */
const WORKER = `
const { Client, resumeOrStart } = await import(process.env.SDK);
const client = new Client({ baseUrl: process.env.BASE, token: process.env.TOKEN });
const started = await resumeOrStart(client, { id: "render-1", kind: "render", heartbeatTimeoutMs: 1000, totalUnits: 3 });
const { handle, resumed } = started;
const done = resumed?.from?.data?.done ?? [];
console.log(JSON.stringify({ status: started.status, attempt: handle.attempt, done }));
for (const stage of [1, 2, 3].filter((s) => !done.includes(s))) {
  await new Promise((ok) => setTimeout(ok, Number(process.env.STAGE_MS)));
  done.push(stage);
  const seq = await handle.checkpoint({ kind: "stage", stage: "s" + stage, data: { done }, completedUnits: done.length });
  console.log(JSON.stringify({ checkpoint: seq, done }));
}
await handle.complete();
console.log(JSON.stringify({ completed: true }));
`;

/** Runs the worker as its own Node process; collects its JSON lines. */
function runWorker(script) {
  const child = spawn(process.execPath, [script], {
    env: { ...process.env, SDK: sdkFile, BASE: h.lifeboat.url, TOKEN: h.adminToken, STAGE_MS: "1500" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines = [];
  let buffer = "";
  child.stdout.on("data", (data) => {
    buffer += data;
    for (let i = buffer.indexOf("\n"); i >= 0; i = buffer.indexOf("\n")) {
      lines.push(JSON.parse(buffer.slice(0, i)));
      buffer = buffer.slice(i + 1);
    }
  });
  let stderr = "";
  child.stderr.on("data", (data) => (stderr += data));
  const exited = new Promise((ok) => child.on("exit", (code, signal) => ok({ code, signal, stderr })));
  return { child, lines, exited };
}

async function session(id) {
  const response = await fetch(`${h.lifeboat.url}/api/v1/sessions/${id}`, { headers: { authorization: `Bearer ${h.adminToken}` } });
  return response.json();
}

test("a Node worker: heartbeats hold a lease shorter than each stage; SIGKILL after stage 2; the next run resumes from it", { timeout: 60_000 }, async () => {
  const script = join(h.tmp, "worker.mjs");
  writeFileSync(script, WORKER);

  const first = runWorker(script);
  await waitFor("stage 2's checkpoint", () => first.lines.some((l) => l.done?.length === 2 && l.checkpoint), { timeoutMs: 20_000 });
  const before = await session("render-1");
  assert.equal(before.status, "active", "3 s of work on a 1 s lease: heartbeats kept it alive");
  assert.equal(before.attempt, 1);
  assert.equal(before.crash, null);
  first.child.kill("SIGKILL");
  const killed = await bounded("the first worker to die", first.exited, 5_000);
  assert.equal(killed.signal, "SIGKILL");

  await waitFor("the lease to run out", async () => (await session("render-1")).status === "incomplete", { timeoutMs: 10_000 });
  const second = runWorker(script);
  const exit = await bounded("the second worker to finish and exit", second.exited, 30_000);
  assert.equal(exit.code, 0, `the second worker failed: ${exit.stderr}`);
  assert.deepEqual(second.lines[0], { status: "recovered", attempt: 2, done: [1, 2] });
  assert.deepEqual(second.lines.at(-1), { completed: true });
  assert.equal(second.lines.filter((l) => l.checkpoint).length, 1, "only stage 3 was done again");

  const finished = await session("render-1");
  assert.equal(finished.status, "completed");
  assert.equal(finished.attempt, 2);
  console.log(`node worker: crash ${JSON.stringify(finished.crash?.type ?? null)}, resumed at attempt 2 from stages [1, 2], stage 3 done once`);
});

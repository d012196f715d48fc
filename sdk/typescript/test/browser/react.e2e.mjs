// The React hooks (`@lifeboat/client/react`) in Chromium, with React 19 under StrictMode
// (every effect runs, is cleaned up and runs again), against the real binary:
// `useAutoSaver` opens one working saver, saves an edit, opens another when the project
// changes and closes on unmount; `useRecoverable` lists the project's stopped session.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { sdkRoot, setup, waitFor } from "./harness.mjs";

let h;
let bundle;
before(async () => {
  h = await setup({ name: "react" });
  const esbuild = await import("esbuild");
  const page = `
    import { createElement as el, StrictMode } from "react";
    import { createRoot } from "react-dom/client";
    import { Client } from ${JSON.stringify(join(sdkRoot, "src", "index.ts"))};
    import { useAutoSaver, useRecoverable } from ${JSON.stringify(join(sdkRoot, "src", "react.ts"))};

    function Editor({ client, project }) {
      const { saver, status, error } = useAutoSaver(client, project, { debounceMs: 100, dbName: "react-test" });
      const { items } = useRecoverable(client, project);
      window.saver = saver;
      // A saver handed out in a render for another project than the one it was opened for
      // would take that project's edits into the wrong document.
      // Nor may a saver be handed out again once another (or none) was shown after it:
      // the hook closed it.
      window.retired ??= new WeakSet();
      if (window.lastSaver && window.lastSaver !== saver) window.retired.add(window.lastSaver);
      window.lastSaver = saver;
      if (saver !== null) {
        const opened = (window.openedFor ??= new WeakMap());
        if (!opened.has(saver)) opened.set(saver, project);
        if (opened.get(saver) !== project) (window.mismatches ??= []).push(project);
        if (window.retired.has(saver)) (window.mismatches ??= []).push("closed saver of " + project);
      }
      return el("p", { id: "out" },
        JSON.stringify({ project, state: status?.state ?? null, pending: status?.pending ?? null,
          error: error ? String(error) : null, recoverable: items.map((i) => i.session.id) }));
    }

    let root = null;
    window.show = (props) => {
      root ??= createRoot(document.body.appendChild(document.createElement("div")));
      root.render(el(StrictMode, null, el(Editor, { ...props, client: window.client })));
    };
    window.start = (baseUrl, token) => { window.client = new Client({ baseUrl, token }); };
    window.unmount = () => { root?.unmount(); root = null; };
  `;
  const result = await esbuild.build({
    stdin: { contents: page, resolveDir: sdkRoot, loader: "js" },
    bundle: true,
    format: "iife",
    platform: "browser",
    define: { "process.env.NODE_ENV": '"development"' },
    write: false,
    logLevel: "silent",
  });
  bundle = result.outputFiles[0].text;
});
after(async () => {
  await h?.stop();
});

const admin = (method, path, body) =>
  fetch(`${h.lifeboat.url}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${h.adminToken}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  }).then((r) => r.json());

test("React hooks under StrictMode: one saver that saves, a new one per project, closed on unmount; the recoverable list", { timeout: 60_000 }, async () => {
  const browser = await h.launch();
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  // A 404 the browser logs for a resource (the project's first GET, before it is created)
  // is not an error of the page.
  page.on("console", (message) => {
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) errors.push(message.text());
  });
  await page.goto(`${h.app.url}/app/config`);
  await page.addScriptTag({ content: bundle });

  // One stopped session of project "react-a", for useRecoverable (the token sees only its project's).
  await admin("POST", "/sessions", { id: "react-job", kind: "render", project_id: "react-a" });
  await admin("POST", "/sessions/react-job/pause", {});

  const token = async (project) => (await (await fetch(`${h.app.url}/app/project-token?project=${project}`)).json()).token;
  await page.evaluate(([base, token]) => window.start(base, token), [h.proxy.url, await token("react-a")]);
  await page.evaluate(() => window.show({ project: "react-a" }));
  const out = async () => JSON.parse(await page.locator("#out").textContent());
  await waitFor("the saver to open and the list to load", async () => {
    const shown = await out();
    return shown.state !== null && shown.recoverable.length === 1 ? shown : null;
  });
  assert.deepEqual((await out()).recoverable, ["react-job"]);

  await page.evaluate(() => window.saver.edit({ title: "from React" }));
  await waitFor("the edit to be saved", async () => (await out()).state === "saved");
  assert.equal((await admin("GET", "/projects/react-a")).state.title, "from React");
  const saves = h.proxy.entries({ path: "/api/v1/projects/react-a" }).filter((e) => e.method === "PATCH");
  assert.equal(saves.length, 1, "one edit, one save");

  // Another project: a new saver (the old one closed), the token of that project.
  await page.evaluate(([base, token]) => window.start(base, token), [h.proxy.url, await token("react-b")]);
  await page.evaluate(() => window.show({ project: "react-b" }));
  await waitFor("the second saver", async () => {
    const shown = await out();
    return shown.project === "react-b" && shown.state !== null ? shown : null;
  });
  await page.evaluate(() => window.saver.edit({ title: "second" }));
  await waitFor("the second edit to be saved", async () => (await out()).state === "saved");
  assert.equal((await admin("GET", "/projects/react-b")).state.title, "second");

  // Back to the first project through none: a new saver, never the one closed before.
  await page.evaluate(() => window.show({ project: null }));
  await page.evaluate(() => window.show({ project: "react-b" }));
  await waitFor("the saver of react-b again", async () => {
    const shown = await out();
    return shown.project === "react-b" && shown.state !== null ? shown : null;
  });
  await page.evaluate(() => window.saver.edit({ title: "third" }));
  await waitFor("the third edit to be saved", async () => (await out()).state === "saved");
  assert.equal((await admin("GET", "/projects/react-b")).state.title, "third");

  await page.evaluate(() => window.unmount());
  assert.deepEqual(await page.evaluate(() => window.mismatches ?? []), [], "no render handed out another project's saver");
  assert.deepEqual(errors, [], "no errors in the page");
  console.log("react hooks: StrictMode, 1 PATCH per edit, a saver per project, 1 recoverable session listed, 0 page errors");
});

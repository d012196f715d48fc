// Checks of the harness itself (no AutoSaver needed): the page reaches the API across
// origins through the proxy; the proxy's `block` looks like offline and its 503 carries a
// readable Retry-After; Lifeboat restarts on its port after SIGKILL; a persistent
// browser is found by its user-data-dir and killed.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { setup } from "./harness.mjs";

let h;
before(async () => {
  h = await setup({ name: "harness" });
});
after(async () => {
  await h?.stop();
});

/** Runs `fn(sdk, args)` in a page of the app's origin with the SDK imported. */
async function inPage(page, fn, args) {
  return page.evaluate(
    async ([source, args]) => {
      const sdk = await import("/sdk/index.js");
      return new Function("sdk", "args", `return (${source})(sdk, args)`)(sdk, args);
    },
    [fn.toString(), args],
  );
}

test("harness: cross-origin API through the proxy, block, 503, restart, browser kill", { timeout: 60_000 }, async () => {
  const browser = await h.launch();
  const page = await browser.newPage();
  await page.goto(`${h.app.url}/app/config`);
  const { token } = await (await fetch(`${h.app.url}/app/project-token?project=harness-doc`)).json();
  const args = { baseUrl: h.proxy.url, token };
  const get = async (sdk, { baseUrl, token }) => {
    const client = new sdk.Client({ baseUrl, token });
    try {
      const response = await client.requestOnce("GET", "/projects/harness-doc");
      return { status: response.status, etag: response.headers.get("etag") };
    } catch (error) {
      return { kind: error.kind, status: error.status, retryAfterMs: error.retryAfterMs };
    }
  };

  assert.deepEqual(await inPage(page, get, args), { status: 200, etag: '"1"' });

  h.proxy.block();
  assert.deepEqual(await inPage(page, get, args), { kind: "offline", status: 0, retryAfterMs: null });
  h.proxy.pass();

  h.proxy.fail503(1, 2);
  assert.deepEqual(await inPage(page, get, args), { kind: "problem", status: 503, retryAfterMs: 2000 });
  assert.deepEqual(await inPage(page, get, args), { status: 200, etag: '"1"' });

  const port = h.lifeboat.port;
  await h.lifeboat.kill();
  assert.equal((await inPage(page, get, args)).kind, "offline");
  await h.lifeboat.start();
  assert.equal(h.lifeboat.port, port);
  assert.deepEqual(await inPage(page, get, args), { status: 200, etag: '"1"' });

  const dir = join(h.tmp, "profile-kill");
  const context = await h.launchPersistent(dir);
  const other = await context.newPage();
  await other.goto(`${h.app.url}/app/config`);
  const pid = await h.killBrowser(dir);
  assert.ok(pid > 0);
});

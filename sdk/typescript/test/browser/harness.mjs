// The browser end-to-end harness: a real `lifeboat serve`, the example application
// (examples/server.mjs: pages, the SDK bundled from src/, token endpoints), a controllable
// proxy between the page and the API, and Debian's Chromium driven by playwright-core.
//
//   page (http://127.0.0.1:<app>)  ──fetch──▶  proxy (http://127.0.0.1:<proxy>)  ──▶  lifeboat
//   app backend ─────────────────────── admin token, direct ─────────────────────────▶  lifeboat
//
// The page and the API are cross-origin, as in production; Lifeboat answers CORS for the
// app's origin, the proxy forwards `Origin` and adds CORS headers to the answers it makes up.
//
// Every process started here is stopped by `stop()` (browsers, servers, Lifeboat), which
// the test files call from `after()`, so a failed test leaves nothing running.

import { spawn } from "node:child_process";
import { createServer, request as httpRequest } from "node:http";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { chromium } from "playwright-core";
import { startAppServer } from "../../examples/server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
export const sdkRoot = resolve(here, "../..");
export const screenshotDir = join(here, "screenshots");

export const LIFEBOAT_BIN = resolve(sdkRoot, process.env.LIFEBOAT_BIN ?? "../../target/debug/lifeboat");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** Polls `check` until it returns a truthy value, or throws `what` after `timeoutMs`. */
export async function waitFor(what, check, { timeoutMs = 15_000, everyMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      const seen = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${seen})`);
    }
    await sleep(everyMs);
  }
}

/** Races `promise` against a timeout. */
export function bounded(what, promise, timeoutMs) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, fail) => {
      timer = setTimeout(() => fail(new Error(`timed out after ${timeoutMs} ms: ${what}`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------
// lifeboat serve

/** A `lifeboat serve` process with its data dir; `kill()` is SIGKILL, `restart()` uses the same port and dir. */
class Lifeboat {
  constructor({ dataDir, corsOrigin, adminToken }) {
    this.dataDir = dataDir;
    this.corsOrigin = corsOrigin;
    this.adminToken = adminToken;
    this.port = 0;
    this.child = null;
    this.output = "";
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    if (!existsSync(LIFEBOAT_BIN)) {
      throw new Error(
        `the lifeboat binary is missing at ${LIFEBOAT_BIN}: build it (cargo build -p lifeboat-cli) or set LIFEBOAT_BIN`,
      );
    }
    // After a SIGKILL the port may take a moment to be free again; retry the bind briefly.
    for (let tries = 0; ; tries++) {
      try {
        return await this.#spawnOnce();
      } catch (error) {
        if (tries >= 20 || this.port === 0) throw error;
        await sleep(100);
      }
    }
  }

  #spawnOnce() {
    const child = spawn(
      LIFEBOAT_BIN,
      [
        "serve",
        "--data-dir",
        this.dataDir,
        "--listen",
        `127.0.0.1:${this.port}`,
        "--cors-origin",
        this.corsOrigin,
        "--cleanup-interval-hours",
        "0",
        "--log",
        "warn",
      ],
      { env: { ...process.env, LIFEBOAT_ADMIN_TOKEN: this.adminToken }, stdio: ["ignore", "pipe", "pipe"] },
    );
    this.child = child;
    let out = "";
    return bounded(
      "lifeboat serve to print its address",
      new Promise((ok, fail) => {
        const onData = (chunk) => {
          out += chunk;
          this.output += chunk;
          const match = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
          if (match) {
            this.port = Number(match[1]);
            ok(this);
          }
        };
        child.stdout.on("data", onData);
        child.stderr.on("data", (chunk) => (this.output += chunk));
        child.once("exit", (code, signal) => fail(new Error(`lifeboat serve exited (${code ?? signal}):\n${this.output.slice(-2000)}`)));
        child.once("error", fail);
      }),
      15_000,
    ).then(async (self) => {
      await waitFor("lifeboat /readyz", async () => (await fetch(`${this.url}/readyz`)).ok, { timeoutMs: 10_000 });
      return self;
    });
  }

  /** SIGKILL: no chance to flush anything that was not committed. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((ok) => child.once("exit", ok));
    child.kill("SIGKILL");
    await bounded("lifeboat to exit after SIGKILL", exited, 5_000);
  }

  async restart() {
    await this.kill();
    await this.start();
  }

  /** An admin call straight to Lifeboat (not through the proxy). */
  async api(method, path, body, headers = {}) {
    const response = await fetch(`${this.url}/api/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.adminToken}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    return { status: response.status, body: json, headers: response.headers };
  }

  async project(id) {
    const got = await this.api("GET", `/projects/${encodeURIComponent(id)}`);
    if (got.status !== 200) throw new Error(`GET /projects/${id}: ${got.status} ${JSON.stringify(got.body)}`);
    return got.body;
  }

  /** Every stored revision of a project, oldest first, each with its state. */
  async history(id) {
    const list = [];
    let cursor = null;
    do {
      const query = `?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const page = await this.api("GET", `/projects/${encodeURIComponent(id)}/revisions${query}`);
      if (page.status !== 200) throw new Error(`revisions of ${id}: ${page.status}`);
      list.push(...page.body.items);
      cursor = page.body.next_cursor;
    } while (cursor);
    list.sort((a, b) => a.revision - b.revision);
    const out = [];
    for (const item of list) {
      const got = await this.api("GET", `/projects/${encodeURIComponent(id)}?revision=${item.revision}`);
      out.push({ revision: item.revision, state: got.body.state });
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------
// The proxy between the page and the API

/**
 * Forwards everything to Lifeboat, except as told:
 * - `pass()`: forward;
 * - `block()`: destroy every connection (open ones too) so `fetch` fails as if offline;
 * - `fail503(count, retryAfterSeconds)`: answer the next `count` non-preflight requests 503
 *   (with CORS headers, so the page can read `Retry-After`);
 * - `delay(ms)`: hold each request before forwarding it (one abandoned meanwhile is dropped);
 * - `cutAnswers(count)`: forward, let Lifeboat answer, then cut the page's connection.
 * It logs every request: method, path, arrival and answer times (`performance.now()`),
 * status, outcome, `Idempotency-Key`, `If-Match`, the `revision` of a save's answer, and
 * `late`: the answer Lifeboat gave after the page had stopped listening.
 */
class ApiProxy {
  constructor(upstream) {
    this.upstream = upstream; // () => port
    this.mode = "pass";
    this.failures = 0;
    this.failMethods = null;
    this.retryAfter = 0;
    this.delayMs = 0;
    this.cuts = 0;
    this.cutMethods = null;
    this.log = [];
    this.sockets = new Set();
    this.corsOrigin = "*";
    this.server = createServer((req, res) => this.#handle(req, res));
    this.server.on("connection", (socket) => {
      if (this.mode === "block") return socket.destroy();
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
  }

  async listen() {
    await new Promise((ok) => this.server.listen(0, "127.0.0.1", ok));
    this.port = this.server.address().port;
    this.url = `http://127.0.0.1:${this.port}`;
    return this;
  }

  pass() {
    this.mode = "pass";
    this.failures = 0;
  }

  block() {
    this.mode = "block";
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  /** Answers the next `count` requests (of `methods`, default any but preflights) with 503 and `Retry-After`. */
  fail503(count, retryAfterSeconds, { methods = null } = {}) {
    this.mode = "pass";
    this.failures = count;
    this.failMethods = methods;
    this.retryAfter = retryAfterSeconds;
  }

  /**
   * Lets the next `count` requests (of `methods`) reach Lifeboat, then cuts the connection
   * instead of answering: the change is made, the page never hears of it.
   */
  cutAnswers(count, { methods = null } = {}) {
    this.cuts = count;
    this.cutMethods = methods;
  }

  /** Holds every request `ms` before forwarding it (0: no delay). */
  delay(ms) {
    this.delayMs = ms;
  }

  /** Entries of the log, optionally only those for `path` (without the query) and `method`. */
  entries({ path, method } = {}) {
    return this.log.filter((e) => (path === undefined || e.path === path) && (method === undefined || e.method === method));
  }

  #handle(req, res) {
    const url = new URL(req.url ?? "/", "http://proxy.invalid");
    const entry = {
      method: req.method,
      path: url.pathname,
      query: url.search,
      start: performance.now(),
      end: null,
      status: null,
      idempotencyKey: req.headers["idempotency-key"]?.replace(/^"|"$/g, "") ?? null,
      ifMatch: req.headers["if-match"] ?? null,
      revision: null,
      outcome: "pending",
      clientGone: false,
      late: null,
    };
    this.log.push(entry);
    const finish = (status, outcome) => {
      entry.end = performance.now();
      entry.status = status;
      entry.outcome = outcome;
    };
    // The browser gave up on the request (its page closed, its fetch aborted): from then on
    // the request is not in flight for the page; an answer Lifeboat still gives is `late`.
    res.on("close", () => {
      if (entry.end !== null) return;
      entry.clientGone = true;
      finish(0, "client-gone");
    });
    if (this.mode === "block") {
      finish(0, "blocked");
      req.socket.destroy();
      return;
    }
    if (this.failures > 0 && req.method !== "OPTIONS" && (this.failMethods === null || this.failMethods.includes(req.method))) {
      this.failures -= 1;
      req.resume();
      res.writeHead(503, {
        "content-type": "application/problem+json",
        "retry-after": String(this.retryAfter),
        "access-control-allow-origin": req.headers.origin ?? "*",
        "access-control-expose-headers": "etag,content-range,retry-after,location",
        vary: "origin",
      });
      res.end(JSON.stringify({ type: "/problems/unavailable", title: "Service Unavailable", status: 503, detail: "proxy says 503" }));
      finish(503, "503");
      return;
    }
    if (this.delayMs > 0 && req.method !== "OPTIONS") {
      req.pause();
      setTimeout(() => this.#forward(req, res, url, entry, finish), this.delayMs);
      return;
    }
    this.#forward(req, res, url, entry, finish);
  }

  #forward(req, res, url, entry, finish) {
    if (entry.clientGone) {
      entry.outcome = "dropped"; // held by `delay` and abandoned: it never reaches Lifeboat
      return;
    }
    if (this.mode === "block") {
      finish(0, "blocked");
      req.socket.destroy();
      return;
    }
    const cut = this.cuts > 0 && req.method !== "OPTIONS" && (this.cutMethods === null || this.cutMethods.includes(req.method));
    if (cut) this.cuts -= 1;
    const upstream = httpRequest(
      { host: "127.0.0.1", port: this.upstream(), method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        if (cut) {
          // Lifeboat has answered (so the change is committed); the page gets a cut connection.
          const body = [];
          answer.on("data", (chunk) => body.push(chunk));
          answer.on("end", () => {
            let revision = null;
            try {
              revision = JSON.parse(Buffer.concat(body).toString("utf8")).revision ?? null;
            } catch {
              // not JSON
            }
            entry.late = { status: answer.statusCode, revision };
            finish(0, "answer-cut");
            req.socket.destroy();
          });
          return;
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        const chunks = [];
        let size = 0;
        answer.on("data", (chunk) => {
          if (size < 65536) chunks.push(chunk);
          size += chunk.length;
          res.write(chunk);
        });
        answer.on("end", () => {
          res.end();
          let revision = null;
          if ((req.method === "PATCH" || req.method === "PUT") && url.pathname.startsWith("/api/v1/projects/")) {
            try {
              revision = JSON.parse(Buffer.concat(chunks).toString("utf8")).revision ?? null;
            } catch {
              // not JSON
            }
          }
          if (entry.clientGone) {
            entry.late = { status: answer.statusCode, revision };
          } else {
            entry.revision = revision;
            finish(answer.statusCode, "answered");
          }
        });
        answer.on("error", () => {
          if (!entry.clientGone) finish(answer.statusCode, "cut");
          res.destroy();
        });
      },
    );
    upstream.on("error", () => {
      // Lifeboat is down (or was killed mid-request): the browser sees a cut connection.
      if (!entry.clientGone) finish(0, "upstream-error");
      res.destroy();
    });
    req.on("error", () => upstream.destroy()); // a body cut short is never applied
    req.pipe(upstream);
  }

  close() {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((ok) => this.server.close(() => ok()));
  }
}

// ---------------------------------------------------------------------------------------
// Browsers

/** Pids of processes whose command line contains `needle` (Chromium's unique user-data-dir). */
function pidsWith(needle) {
  const pids = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmdline = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0");
      if (cmdline.some((arg) => arg.includes(needle))) pids.push({ pid: Number(name), cmdline });
    } catch {
      // gone already
    }
  }
  return pids;
}

/** Whether `pid` still runs: a zombie (killed, not yet reaped by its parent) does not. */
function alive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The state follows the command name, which is in parentheses and may hold spaces.
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------
// The whole setup

export async function setup({ name = "e2e" } = {}) {
  const tmp = mkdtempSync(join(tmpdir(), `lifeboat-browser-${name}-`));
  const adminToken = `lb_admin_test_${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  const cleanups = [];
  const h = {
    tmp,
    adminToken,
    app: null,
    lifeboat: null,
    proxy: null,
    browsers: [],
    persistent: [],
  };
  try {
    const config = {};
    h.app = await startAppServer({ config });
    cleanups.push(() => h.app.close());
    h.lifeboat = new Lifeboat({ dataDir: join(tmp, "data"), corsOrigin: h.app.url, adminToken });
    cleanups.push(() => h.lifeboat.kill());
    await h.lifeboat.start();
    h.proxy = await new ApiProxy(() => h.lifeboat.port).listen();
    cleanups.push(() => h.proxy.close());
    Object.assign(config, { apiBase: h.proxy.url, adminBase: h.lifeboat.url, adminToken });
  } catch (error) {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
    throw error;
  }

  /** A fresh browser (its own profile in memory). */
  h.launch = async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`Chromium is missing at ${CHROMIUM} (apt-get install chromium)`);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS, headless: true, timeout: 30_000 });
    h.browsers.push(browser);
    return browser;
  };

  /** A browser with a profile on disk (IndexedDB survives closing or killing it). */
  h.launchPersistent = async (userDataDir) => {
    if (!existsSync(CHROMIUM)) throw new Error(`Chromium is missing at ${CHROMIUM} (apt-get install chromium)`);
    mkdirSync(userDataDir, { recursive: true });
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      args: CHROMIUM_FLAGS,
      headless: true,
      timeout: 30_000,
      viewport: { width: 900, height: 640 },
    });
    const record = { context, userDataDir };
    h.persistent.push(record);
    return context;
  };

  /** SIGKILL of the browser process of a persistent context (found by its user-data-dir). */
  h.killBrowser = async (userDataDir) => {
    const procs = pidsWith(userDataDir);
    const main = procs.find((p) => !p.cmdline.some((arg) => arg.startsWith("--type=")) && p.cmdline[0].includes("chrom"));
    if (!main) throw new Error(`no browser process found for ${userDataDir}`);
    process.kill(main.pid, "SIGKILL");
    await waitFor("the browser process to die", () => !alive(main.pid), { timeoutMs: 5_000 });
    // Its helpers (renderers, zygotes) follow their parent; make sure none is left.
    await sleep(200);
    for (const p of pidsWith(userDataDir)) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    const record = h.persistent.find((r) => r.userDataDir === userDataDir);
    if (record) {
      h.persistent.splice(h.persistent.indexOf(record), 1);
      record.context.close().catch(() => {});
    }
    return main.pid;
  };

  /** A new page of `context` at an example page, waiting until its test hook is ready. */
  h.open = async (context, path, { ready = true } = {}) => {
    const page = await context.newPage();
    page.on("pageerror", (error) => console.log(`[page error] ${error.message}`));
    page.on("console", (msg) => {
      // Failed requests are what these tests provoke; print them only when asked.
      const noise = msg.text().startsWith("Failed to load resource");
      if ((msg.type() === "error" && !noise) || process.env.LIFEBOAT_E2E_VERBOSE) console.log(`[page ${msg.type()}] ${msg.text()}`);
    });
    await page.goto(`${h.app.url}/${path}`, { timeout: 15_000 });
    if (ready) {
      await page.waitForFunction(() => window.lifeboatTest !== undefined, null, { timeout: 15_000 });
      const failed = await page.evaluate(() => (window.lifeboatTest.ready ? null : window.lifeboatTest.failed));
      if (failed) throw new Error(`the page ${path} did not start: ${failed}`);
    }
    return page;
  };

  /** The page's AutoSaver status. */
  h.status = (page) => page.evaluate(() => window.lifeboatTest.status());
  /** The text of the page's status line. */
  h.statusText = (page) => page.locator("#status").innerText({ timeout: 5_000 });

  /** Waits until the page says everything is saved (nothing pending, state saved or idle). */
  h.waitSaved = (page, what = "saved", timeoutMs = 20_000) =>
    waitFor(
      what,
      async () => {
        const s = await h.status(page);
        return (s.state === "saved" || s.state === "idle") && s.pending === 0 ? s : false;
      },
      { timeoutMs, everyMs: 100 },
    );

  /**
   * Counts for the scenario line. `expected` maps each edit made to the value the final state
   * must hold at that key (top-level keys; `undefined` values are skipped).
   */
  h.account = async (docId, expected) => {
    const final = (await h.lifeboat.project(docId)).state;
    const keys = Object.keys(expected);
    const saved = keys.filter((k) => isDeepStrictEqual(final[k], expected[k])).length;
    const history = await h.lifeboat.history(docId);
    const dup = duplicates(history, h.proxy.entries(), docId);
    return { made: keys.length, saved, lost: keys.length - saved, duplicates: dup.count, final, history, dup };
  };

  h.stop = async () => {
    for (const record of h.persistent.splice(0)) {
      await bounded("closing a persistent context", record.context.close(), 10_000).catch(() => {});
      for (const p of pidsWith(record.userDataDir)) {
        try {
          process.kill(p.pid, "SIGKILL");
        } catch {
          // gone
        }
      }
    }
    for (const browser of h.browsers.splice(0)) {
      await bounded("closing a browser", browser.close(), 10_000).catch(() => {});
    }
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
    // Anything of ours still running (a browser whose close failed) is found by our tmp dir.
    for (const p of pidsWith(tmp)) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    rmSync(tmp, { recursive: true, force: true });
  };

  return h;
}

/**
 * Duplicates, as the scenario lines count them:
 * (a) a revision whose state equals the previous revision's state: a save that changed
 *     nothing, i.e. a patch applied a second time (every edit in these tests changes the state);
 * (b) an `Idempotency-Key` that got 2xx answers naming different revisions: one save that
 *     made two revisions.
 */
export function duplicates(history, log, docId) {
  const sameAsPrevious = [];
  for (let i = 1; i < history.length; i++) {
    if (isDeepStrictEqual(history[i].state, history[i - 1].state)) sameAsPrevious.push(history[i].revision);
  }
  const byKey = new Map();
  for (const e of log) {
    if (!e.idempotencyKey || (docId && e.path !== `/api/v1/projects/${docId}`)) continue;
    // Answers the page read, and answers Lifeboat gave after the page had gone.
    for (const { status, revision } of [{ status: e.status, revision: e.revision }, e.late ?? {}]) {
      if (!(status >= 200 && status < 300) || revision === null || revision === undefined) continue;
      if (!byKey.has(e.idempotencyKey)) byKey.set(e.idempotencyKey, new Set());
      byKey.get(e.idempotencyKey).add(revision);
    }
  }
  const keysWithTwoRevisions = [...byKey].filter(([, revisions]) => revisions.size > 1).map(([key]) => key);
  return { count: sameAsPrevious.length + keysWithTwoRevisions.length, sameAsPrevious, keysWithTwoRevisions };
}

/** Overlapping save requests (PATCH/PUT) on one path in the proxy log: pairs of entries in flight at once. */
export function overlappingSaves(log, path) {
  const saves = log
    .filter((e) => (e.method === "PATCH" || e.method === "PUT") && e.path === path && e.outcome !== "blocked")
    .map((e) => ({ ...e, end: e.end ?? Infinity }))
    .sort((a, b) => a.start - b.start);
  const overlaps = [];
  for (let i = 0; i < saves.length; i++) {
    for (let j = i + 1; j < saves.length && saves[j].start < saves[i].end; j++) overlaps.push([saves[i], saves[j]]);
  }
  return overlaps;
}

/** Prints the scenario's line and returns it. */
export function report(name, counts) {
  const line = `${name}: made=${counts.made} saved=${counts.saved} lost=${counts.lost} duplicates=${counts.duplicates}`;
  console.log(line);
  return line;
}

export function screenshotPath(name) {
  mkdirSync(screenshotDir, { recursive: true });
  return join(screenshotDir, `${name}.png`);
}

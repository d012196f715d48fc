// The example "application": a small Node server that serves the example pages, the SDK
// bundled for the browser, and the backend endpoints a real application would have to hand
// out Lifeboat tokens. The browser never sees the admin token; it gets a project token
// (`lbp_…`) for the document it edits and a session token (`lbs_…`) for a recorder session.
//
// By hand (see examples/README.md):
//   LIFEBOAT_ADMIN_TOKEN=… node examples/server.mjs --api http://127.0.0.1:7433 --port 8080
// The test harness (test/browser/harness.mjs) imports `startAppServer` instead, and points
// the pages at its fault-injecting proxy while the backend talks to Lifeboat directly.

import { createServer } from "node:http";
import { existsSync, readFileSync } from "node:fs";
import { dirname, extname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
};

/** Bundles the SDK's browser entries (index, recovery) from `src/` into ESM files kept in memory. */
export async function bundleSdk() {
  const esbuild = await import("esbuild");
  const entryPoints = {};
  for (const name of ["index", "recovery"]) {
    const file = join(root, "src", `${name}.ts`);
    if (existsSync(file)) entryPoints[name] = file;
  }
  const result = await esbuild.build({
    entryPoints,
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    sourcemap: "inline",
    write: false,
    outdir: "/sdk",
    logLevel: "silent",
  });
  const files = new Map();
  for (const out of result.outputFiles) files.set(`/sdk/${out.path.split("/sdk/").pop()}`, out.text);
  return files;
}

/**
 * Starts the application server.
 * `config` is read on every request, so a caller may fill it in after the server listens:
 * `apiBase` (what pages call: Lifeboat, or a proxy in front of it), `adminBase` (what this
 * backend calls: Lifeboat itself) and `adminToken`.
 */
export async function startAppServer({ port = 0, host = "127.0.0.1", config = {}, log = () => {} } = {}) {
  const sdk = await bundleSdk();

  async function admin(method, path, body) {
    const response = await fetch(`${config.adminBase}/api/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${config.adminToken}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...(method === "PUT" && path.startsWith("/projects/") ? { "if-none-match": "*" } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  async function backend(url, res) {
    const send = (status, body) => {
      res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === "/app/config") return send(200, { apiBase: config.apiBase });
    const project = url.searchParams.get("project") ?? "";
    if (url.pathname === "/app/project-token") {
      // The backend makes sure the document exists (create-only: 412 means it already does),
      // then hands out a token that reaches that document and nothing else.
      const created = await admin("PUT", `/projects/${encodeURIComponent(project)}`, { state: {} });
      if (![200, 201, 412].includes(created.status)) return send(502, created.body);
      const minted = await admin("POST", `/projects/${encodeURIComponent(project)}/token`, {});
      return send(minted.status === 201 ? 200 : 502, minted.body);
    }
    if (url.pathname === "/app/session") {
      // A recorder session belongs to the document; the backend creates it (or finds it) and
      // hands out a token for its current attempt.
      const id = url.searchParams.get("id") ?? "";
      const timeout = Number(url.searchParams.get("heartbeat_timeout_ms") ?? "30000");
      const created = await admin("POST", "/sessions", {
        id,
        kind: "recording",
        title: url.searchParams.get("title") ?? `Recording ${id}`,
        project_id: project || undefined,
        heartbeat_timeout_ms: timeout,
      });
      if (![201, 409].includes(created.status)) return send(502, created.body);
      return send(200, await sessionToken(id));
    }
    if (url.pathname === "/app/session-token") {
      return send(200, await sessionToken(url.searchParams.get("id") ?? ""));
    }
    return send(404, { error: "no such endpoint" });
  }

  async function sessionToken(id) {
    const session = await admin("GET", `/sessions/${encodeURIComponent(id)}`);
    const minted = await admin("POST", `/sessions/${encodeURIComponent(id)}/token`, {});
    if (minted.status !== 201) throw new Error(`session token: ${minted.status} ${JSON.stringify(minted.body)}`);
    return { session: session.body, token: minted.body.token };
  }

  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://app.invalid");
    log(`${req.method} ${url.pathname}${url.search}`);
    try {
      if (url.pathname.startsWith("/app/")) return await backend(url, res);
      if (sdk.has(url.pathname)) {
        res.writeHead(200, { "content-type": TYPES[".js"], "cache-control": "no-store" });
        return res.end(sdk.get(url.pathname));
      }
      if (url.pathname === "/axe.min.js") {
        res.writeHead(200, { "content-type": TYPES[".js"] });
        return res.end(readFileSync(join(root, "node_modules", "axe-core", "axe.min.js")));
      }
      const name = url.pathname === "/" ? "index.html" : url.pathname.slice(1);
      const file = join(here, name);
      if (!name.includes("..") && file.startsWith(here) && existsSync(file) && extname(file) in TYPES) {
        res.writeHead(200, { "content-type": TYPES[extname(file)], "cache-control": "no-store" });
        return res.end(readFileSync(file));
      }
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found");
    } catch (error) {
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
      res.end(String(error?.stack ?? error));
    }
  });
  await new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(port, host, ok);
  });
  const address = server.address();
  const url = `http://${host}:${address.port}`;
  return {
    url,
    port: address.port,
    config,
    close: () =>
      new Promise((ok) => {
        server.closeAllConnections?.();
        server.close(() => ok());
      }),
  };
}

// Run by hand: node examples/server.mjs [--api URL] [--port N]
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const args = process.argv.slice(2);
  const option = (name, fallback) => {
    const i = args.indexOf(name);
    return i >= 0 && args[i + 1] ? args[i + 1] : fallback;
  };
  const api = option("--api", process.env.LIFEBOAT_URL ?? "http://127.0.0.1:7433");
  const adminToken = process.env.LIFEBOAT_ADMIN_TOKEN;
  if (!adminToken) {
    console.error("set LIFEBOAT_ADMIN_TOKEN to the token `lifeboat serve` uses (see examples/README.md)");
    process.exit(2);
  }
  const app = await startAppServer({
    port: Number(option("--port", "8080")),
    config: { apiBase: api, adminBase: api, adminToken },
  });
  console.log(`example app on ${app.url} (document: ${app.url}/document.html, recorder: ${app.url}/recorder.html)`);
  console.log(`Lifeboat must allow this origin: lifeboat serve --cors-origin ${app.url}`);
}

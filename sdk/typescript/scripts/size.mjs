// Bundle-size budget: measures what applications ship. Each bundle is made the way an app's
// bundler would (esbuild: bundled with idb, minified, ESM, browser platform, react left
// out), gzipped at level 9 (node:zlib), and checked against its goal:
//
// - autosaver: `export { Client, AutoSaver } from "."` — what a page that auto-saves pays;
// - recovery: the `./recovery` entry (the <lifeboat-recovery> element);
// - react: the `./react` entry (hooks; no goal of its own, it is in the package total);
// - package: every export of every entry, in one bundle.
//
// Bundles whose entry source does not exist yet are skipped. Prints a table; exits 1 when
// a bundle is over its goal.

import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The package's entries (package.json `exports`) and their sources. */
const ENTRIES = [
  { name: ".", source: "src/index.ts" },
  { name: "./recovery", source: "src/recovery.ts" },
  { name: "./react", source: "src/react.ts" },
];
const present = ENTRIES.filter((entry) => existsSync(join(root, entry.source)));
const has = (name) => present.some((entry) => entry.name === name);

/** The bundles measured: a label, what it imports (as a module's text, or null if skipped), the goal in bytes (null: none). */
const BUNDLES = [
  {
    label: "autosaver",
    what: '{ Client, AutoSaver } from "."',
    contents: has(".") ? 'export { Client, AutoSaver } from "./src/index.ts";' : null,
    goalBytes: 8192,
  },
  {
    label: "recovery",
    what: '"./recovery"',
    contents: has("./recovery") ? 'export * from "./src/recovery.ts";' : null,
    goalBytes: 6144,
  },
  {
    label: "react",
    what: '"./react" (react external)',
    contents: has("./react") ? 'export * from "./src/react.ts";' : null,
    goalBytes: null,
  },
  {
    label: "package",
    what: `every export of ${present.map((entry) => `"${entry.name}"`).join(", ")}`,
    // Namespace re-exports keep every export of every entry, so nothing is shaken away.
    contents: present.map((entry, i) => `import * as e${i} from "./${entry.source}"; export { e${i} };`).join("\n"),
    goalBytes: 12288,
  },
];

/** The minified bundle's bytes, gzipped at level 9. */
async function gzipBytes(contents) {
  const result = await build({
    stdin: { contents, resolveDir: root, loader: "ts", sourcefile: "size-entry.ts" },
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    external: ["react", "react/*", "react-dom", "react-dom/*"],
    write: false,
    logLevel: "warning",
    absWorkingDir: root,
  });
  const output = result.outputFiles[0];
  return { minBytes: output.contents.length, gzipBytes: gzipSync(output.contents, { level: 9 }).length };
}

const rows = [["bundle", "imports", "min B", "gzip B", "goal B", ""]];
let over = false;
for (const bundle of BUNDLES) {
  if (bundle.contents === null) {
    rows.push([bundle.label, bundle.what, "-", "-", String(bundle.goalBytes ?? "-"), "skipped: no source yet"]);
    continue;
  }
  const size = await gzipBytes(bundle.contents);
  const late = bundle.goalBytes !== null && size.gzipBytes > bundle.goalBytes;
  over ||= late;
  rows.push([bundle.label, bundle.what, String(size.minBytes), String(size.gzipBytes), String(bundle.goalBytes ?? "-"), late ? "OVER" : "ok"]);
}
const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
for (const row of rows) {
  console.log(row.map((cell, column) => (column >= 2 && column <= 4 ? cell.padStart(widths[column]) : cell.padEnd(widths[column]))).join("  ").trimEnd());
}
if (over) {
  console.error("size: over budget");
  process.exit(1);
}

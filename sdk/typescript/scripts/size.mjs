// Bundle-size budget: bundles each package entry as a browser would get it (esbuild,
// minified ESM, idb included, react left out), gzips it at level 9 and fails when an
// entry, or the whole package bundled into one file, is over its limit. Entries whose
// source does not exist yet are skipped.

import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Each export of package.json, its source and its gzip limit in bytes (null: none yet). */
const ENTRIES = [
  { name: ".", source: "src/index.ts", limitBytes: 8192 },
  { name: "./recovery", source: "src/recovery.ts", limitBytes: 6144 },
  { name: "./react", source: "src/react.ts", limitBytes: null },
];
/** Every entry together, as an application that uses all of them pays for it. */
const PACKAGE_LIMIT_BYTES = 12288;

/** The gzipped size of `options`' bundle. */
async function gzipBytes(options) {
  const result = await build({
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    external: ["react", "react/*", "react-dom", "react-dom/*"],
    write: false,
    logLevel: "warning",
    absWorkingDir: root,
    ...options,
  });
  const output = result.outputFiles[0];
  return gzipSync(output.contents, { level: 9 }).length;
}

function line(label, bytes, limitBytes) {
  const over = limitBytes !== null && bytes > limitBytes;
  const limit = limitBytes === null ? "no limit" : `limit ${limitBytes} B`;
  console.log(`${label.padEnd(12)} ${String(bytes).padStart(6)} B gzip  (${limit})${over ? "  OVER" : ""}`);
  return over;
}

const present = ENTRIES.filter((entry) => {
  const exists = existsSync(join(root, entry.source));
  if (!exists) console.log(`${entry.name.padEnd(12)} skipped: ${entry.source} does not exist yet`);
  return exists;
});
let over = false;
for (const entry of present) {
  over = line(entry.name, await gzipBytes({ entryPoints: [entry.source] }), entry.limitBytes) || over;
}
// Namespace re-exports keep every export of every entry, so nothing is shaken away.
const whole = present.map((entry, i) => `import * as e${i} from "./${entry.source}"; export { e${i} };`).join("\n");
const wholeBytes = await gzipBytes({ stdin: { contents: whole, resolveDir: root, loader: "ts", sourcefile: "package.ts" } });
over = line("package", wholeBytes, PACKAGE_LIMIT_BYTES) || over;
if (over) {
  console.error("size: over budget");
  process.exit(1);
}

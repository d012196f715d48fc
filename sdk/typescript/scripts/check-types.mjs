// Regenerates the API types from docs/openapi.json into a temporary file and fails when
// they differ from the committed src/api.ts, so the SDK cannot drift from the server.
// Fix a failure with `npm run gen:types` and commit the result.

import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = mkdtempSync(join(tmpdir(), "lifeboat-api-"));
const fresh = join(dir, "api.ts");
try {
  const cli = join(root, "node_modules", "openapi-typescript", "bin", "cli.js");
  const run = spawnSync(process.execPath, [cli, "../../docs/openapi.json", "-o", fresh], {
    cwd: root,
    stdio: ["ignore", "ignore", "inherit"],
  });
  if (run.status !== 0) {
    console.error("check:types: openapi-typescript failed");
    process.exit(1);
  }
  if (readFileSync(fresh, "utf8") !== readFileSync(join(root, "src", "api.ts"), "utf8")) {
    console.error("check:types: src/api.ts is out of date with docs/openapi.json; run `npm run gen:types` and commit it");
    process.exit(1);
  }
  console.log("check:types: src/api.ts matches docs/openapi.json");
} finally {
  rmSync(dir, { recursive: true, force: true });
}

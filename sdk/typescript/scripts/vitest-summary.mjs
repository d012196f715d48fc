// Runs vitest once, then prints a plain `N passed, M failed` line from its JSON report:
// CI's runner detection reads that line, not vitest's own summary. Exits non-zero when a
// test failed or vitest itself did. Extra arguments go to vitest.

import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = mkdtempSync(join(tmpdir(), "lifeboat-vitest-"));
const report = join(dir, "results.json");
let passed = 0;
let failed = 0;
let status = 1;
try {
  const cli = join(root, "node_modules", "vitest", "vitest.mjs");
  const run = spawnSync(
    process.execPath,
    [cli, "run", "--reporter=default", "--reporter=json", `--outputFile=${report}`, ...process.argv.slice(2)],
    { cwd: root, stdio: "inherit" },
  );
  status = run.status ?? 1;
  try {
    const results = JSON.parse(readFileSync(report, "utf8"));
    passed = results.numPassedTests;
    failed = results.numFailedTests;
    // A file that fails to load has no failed test, but the run failed.
    if (!results.success && failed === 0) failed = Math.max(1, results.numFailedTestSuites);
  } catch {
    failed = Math.max(failed, 1); // No report: vitest did not get as far as running tests.
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || status !== 0 ? 1 : 0);

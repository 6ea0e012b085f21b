// Judge the suite's tasks-* scenarios run through symbi in front of test/servers/slowjobs
// (an upstream that knows nothing of tasks).
//
//   node tasks.mjs OUT SCENARIO...
//
// OUT holds one `conformance server -o` folder per scenario (OUT/SCENARIO/server-*/
// checks.json). A scenario passes when it has a checks.json with no FAILURE or WARNING
// check; tasks-status-notifications only reports SKIPPED in the pinned suite, which
// counts as passing. Prints one line per scenario and "N passed, M failed"; exit 1 on
// any failure.
import fs from "node:fs";
import path from "node:path";

const [out, ...scenarios] = process.argv.slice(2);
if (!out || scenarios.length === 0) {
  console.error("usage: tasks.mjs OUT SCENARIO...");
  process.exit(2);
}
let passed = 0;
let failed = 0;
for (const s of scenarios) {
  const dir = path.join(out, s);
  let checks = null;
  if (fs.existsSync(dir)) {
    for (const d of fs.readdirSync(dir)) {
      const f = path.join(dir, d, "checks.json");
      if (fs.existsSync(f)) checks = JSON.parse(fs.readFileSync(f, "utf8"));
    }
  }
  if (!Array.isArray(checks) || checks.length === 0) {
    console.log(`FAIL ${s}: no checks recorded`);
    failed++;
    continue;
  }
  const bad = checks.filter((c) => c.status === "FAILURE" || c.status === "WARNING");
  if (bad.length > 0) {
    console.log(`FAIL ${s}: ${bad.map((c) => `${c.id} (${c.errorMessage ?? c.status})`).join("; ")}`);
    failed++;
  } else {
    console.log(`ok   ${s} (${checks.length} checks)`);
    passed++;
  }
}
console.log(`tasks through symbi: ${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);

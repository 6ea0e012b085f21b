// Compare per-scenario outcomes of the MCP conformance suite run directly against
// the reference server and through symbi.
//
//   node compare.mjs LABEL=EXPECTED_FAILURES.yaml:DIRECT_OUT:SYMBI_OUT [LABEL=...]
//
// Each *_OUT is a `conformance server -o DIR` folder: one server-<scenario>-<timestamp>/
// folder per scenario with a checks.json. The judgement follows the suite's own
// --expected-failures rules: a check with status FAILURE or WARNING is a failure, and a
// baseline entry is either a whole scenario or `scenario:check-id`. A scenario is clean
// when it has a checks.json and every failing check is excused by a per-check entry.
//
// Every scenario that is clean directly must be clean through symbi; those are the
// ones counted in the closing "N passed, M failed" line. Scenarios listed whole in the
// baseline are not required. The baseline must be exact for the direct run: an entry
// that does not fail directly, or a direct failure without an entry, is an error (the
// baseline may only excuse what the reference server itself fails).
// Exit status: 0 when nothing regressed and the baseline is exact, 1 otherwise.
import fs from "node:fs";
import path from "node:path";

const pairs = process.argv.slice(2);
if (pairs.length === 0) {
  console.error("usage: compare.mjs LABEL=EXPECTED_FAILURES.yaml:DIRECT_OUT:SYMBI_OUT ...");
  process.exit(2);
}

// The baseline is the suite's YAML format; only its "server:" list matters here, so a
// small reader avoids a YAML dependency: "server:" then "  - entry" lines, or "server: []".
function readBaseline(file) {
  const scenarios = new Set();
  const checks = new Map(); // scenario -> Set(check id)
  let inServer = false;
  for (const raw of fs.readFileSync(file, "utf8").split("\n")) {
    const line = raw.replace(/\s#.*$|^#.*$/, "").trimEnd();
    if (!line.trim()) continue;
    if (/^\S/.test(line)) {
      inServer = /^server:\s*(\[\])?$/.test(line);
      continue;
    }
    const m = inServer && line.match(/^\s+-\s+(\S+)$/);
    if (!m) continue;
    const entry = m[1].replace(/^["']|["']$/g, "");
    const colon = entry.indexOf(":");
    if (colon < 0) scenarios.add(entry);
    else {
      const s = entry.slice(0, colon);
      if (!checks.has(s)) checks.set(s, new Set());
      checks.get(s).add(entry.slice(colon + 1));
    }
  }
  return { scenarios, checks };
}

const dirRe = /^server-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$/;
const isBad = (c) => c.status === "FAILURE" || c.status === "WARNING";

// readOutcomes returns scenario -> {checks, counts, bad: [check ids failing], error}.
function readOutcomes(dir) {
  const res = new Map();
  if (!fs.existsSync(dir)) return res;
  for (const name of fs.readdirSync(dir)) {
    const m = name.match(dirRe);
    if (!m) continue;
    const o = { checks: [], success: 0, failure: 0, warning: 0, error: "" };
    try {
      o.checks = JSON.parse(fs.readFileSync(path.join(dir, name, "checks.json"), "utf8"));
    } catch (e) {
      o.error = `no readable checks.json (${e.code || e.message})`;
    }
    for (const c of o.checks) {
      if (c.status === "SUCCESS") o.success++;
      else if (c.status === "FAILURE") o.failure++;
      else if (c.status === "WARNING") o.warning++;
    }
    res.set(m[1], o);
  }
  return res;
}

// unexcused lists the failing checks of o not excused by per-check entries.
function unexcused(o, excused) {
  if (!o) return ["no result"];
  if (o.error) return [o.error];
  return o.checks.filter((c) => isBad(c) && !(excused && excused.has(c.id))).map((c) => `${c.id} ${c.status}`);
}

const fmt = (o, bad) => {
  if (!o) return "missing";
  const counts = `${o.success}/${o.failure}${o.warning ? `/w${o.warning}` : ""}`;
  return `${bad.length === 0 ? "pass" : "FAIL"} ${counts}`;
};

let passed = 0;
let failed = 0;
let gaps = 0;
let notRequired = 0;
let problems = 0;
const rows = [];
const notes = [];

for (const pair of pairs) {
  const eq = pair.indexOf("=");
  const label = pair.slice(0, eq);
  const [baselineFile, directDir, symbiDir, gapsFile] = pair.slice(eq + 1).split(":");
  const base = readBaseline(baselineFile);
  // Known gaps: checks that pass directly but cannot pass through symbi for a documented
  // reason outside symbi (see the file's comments). They are reported, never hidden, and
  // an entry that passes through symbi must be removed.
  const known = gapsFile && fs.existsSync(gapsFile) ? readBaseline(gapsFile) : { scenarios: new Set(), checks: new Map() };
  const bname = path.basename(baselineFile);
  const direct = readOutcomes(directDir);
  const symbi = readOutcomes(symbiDir);
  if (direct.size === 0) {
    problems++;
    notes.push(`${label}: the direct run produced no scenario results`);
  }
  const names = [...new Set([...direct.keys(), ...symbi.keys()])].sort();
  for (const s of names) {
    const d = direct.get(s);
    const v = symbi.get(s);
    const excused = base.checks.get(s);
    const dBad = unexcused(d, excused);
    const vBad = unexcused(v, excused);
    let verdict;
    if (base.scenarios.has(s)) {
      notRequired++;
      verdict = "not required (baseline)";
      if (d && dBad.length === 0) {
        problems++;
        notes.push(`${label} ${s}: passes directly but ${bname} excuses it: remove the entry`);
      }
    } else if (!d) {
      notRequired++;
      verdict = "not required (no direct run)";
    } else if (dBad.length > 0) {
      notRequired++;
      problems++;
      verdict = "BASELINE?";
      notes.push(`${label} ${s}: fails directly (${dBad.join(", ")}) and ${bname} does not list it`);
    } else if (vBad.length === 0) {
      passed++;
      verdict = "ok";
    } else if (known.checks.has(s) && vBad.every((c) => known.checks.get(s).has(c.split(" ")[0]))) {
      gaps++;
      verdict = "KNOWN GAP";
      notes.push(`${label} ${s}: known gap through symbi (${vBad.join(", ")}): see ${path.basename(gapsFile)}`);
    } else {
      failed++;
      verdict = "REGRESSION";
      notes.push(`${label} ${s}: through symbi: ${vBad.join(", ")}`);
    }
    if (known.checks.has(s) && v && vBad.length === 0) {
      problems++;
      notes.push(`${label} ${s}: passes through symbi but ${path.basename(gapsFile)} lists it: remove the entry`);
    }
    if (excused && d) {
      for (const id of excused) {
        const c = d.checks.find((x) => x.id === id && x.status !== "INFO");
        if (c && c.status === "SUCCESS") {
          problems++;
          notes.push(`${label} ${s}:${id} passes directly but ${bname} excuses it: remove the entry`);
        }
      }
    }
    rows.push([label, s, fmt(d, dBad), fmt(v, vBad), verdict]);
  }
  for (const s of [...base.scenarios, ...base.checks.keys()]) {
    if (!direct.has(s)) {
      problems++;
      notes.push(`${label}: ${bname} lists ${s}, which did not run directly: remove it`);
    }
  }
}

const head = ["wire", "scenario", "direct", "via symbi", "verdict"];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
console.log("direct / via symbi: outcome, then successful/failed checks (wN: N warnings);");
console.log("a FAILURE or WARNING check fails a scenario unless the baseline excuses that check.");
console.log(line(head));
console.log(line(widths.map((w) => "-".repeat(w))));
for (const r of rows) console.log(line(r));
console.log("");
for (const n of notes) console.log(`note: ${n}`);
if (problems > 0) console.log(`${problems} baseline problems (see the notes)`);
console.log(`${notRequired} scenarios not required (they fail directly against the reference server)`);
if (gaps > 0) console.log(`${gaps} known gap(s) through symbi, listed above with their reason`);
console.log(`${passed} passed, ${failed} failed, ${gaps} skipped`);
process.exit(failed > 0 || problems > 0 ? 1 : 0);

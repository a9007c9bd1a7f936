#!/usr/bin/env python3
"""Summarises cargo-mutants results per file and checks the survivors.

Usage: python3 ci/mutants_report.py RESULTS_DIR DOC

RESULTS_DIR holds one cargo-mutants output per group (<group>/mutants.out/
outcomes.json). DOC (docs/testing.md) lists the known survivors between
the `mutants-survivors` markers, one per table row: the file, the mutant
as cargo-mutants names it *without* its line:column, and why it survives
(equivalent, or concurrency-only with the loom model that covers it).
Exit status 1 if any surviving mutant is not listed: a new survivor is a
gap in the tests, to be closed or argued in the doc.
"""
import collections
import json
import os
import re
import sys

BEGIN = "<!-- mutants-survivors:begin -->"
END = "<!-- mutants-survivors:end -->"


def key(name):
    """`path:line:col: what` -> (path, what)."""
    m = re.match(r"([^:]+):\d+:\d+: (.*)", name)
    return (m.group(1), m.group(2)) if m else (name, "")


def known(doc):
    text = open(doc, encoding="utf-8").read()
    if BEGIN not in text:
        return collections.Counter()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    rows = collections.Counter()
    for line in block.splitlines():
        # Cells split on unescaped pipes; `\|` inside a mutant's name is a
        # literal pipe (`replace | with ^`).
        body = line.strip()
        if not body.startswith("|"):
            continue
        cells = [c.strip().replace("\\|", "|")
                 for c in re.split(r"(?<!\\)\|", body)[1:-1]]
        if len(cells) >= 3 and cells[0].startswith("`crates/"):
            rows[(cells[0].strip("`"), cells[1].strip("`"))] += 1
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    results, doc = sys.argv[1], sys.argv[2]
    per_file = collections.defaultdict(collections.Counter)
    survivors = collections.Counter()
    for group in sorted(os.listdir(results)):
        path = os.path.join(results, group, "mutants.out", "outcomes.json")
        if not os.path.exists(path):
            continue
        for o in json.load(open(path))["outcomes"]:
            scen = o["scenario"]
            if not isinstance(scen, dict) or "Mutant" not in scen:
                if o["summary"] != "Success":
                    print(f"mutants: {group}: the unmutated baseline failed ({o['summary']})")
                    return 1
                continue
            f, what = key(scen["Mutant"]["name"])
            per_file[f][o["summary"]] += 1
            if o["summary"] == "MissedMutant":
                survivors[(f, what)] += 1
    if not per_file:
        print("mutants: no results")
        return 1
    print("| file | caught | timeout | missed | unviable | score |")
    print("|---|---:|---:|---:|---:|---:|")
    for f, c in sorted(per_file.items()):
        viable = c["CaughtMutant"] + c["Timeout"] + c["MissedMutant"]
        score = 100.0 * (viable - c["MissedMutant"]) / viable if viable else 100.0
        print(f"| `{f}` | {c['CaughtMutant']} | {c['Timeout']} | {c['MissedMutant']} "
              f"| {c['Unviable']} | {score:.1f}% |")
    allowed = known(doc)
    new = survivors - allowed
    for (f, what), n in sorted(survivors.items()):
        tag = "new" if (f, what) in new else "known"
        print(f"survived ({tag}): {f}: {what}" + (f" (x{n})" if n > 1 else ""))
    if new:
        print(f"mutants: {sum(new.values())} surviving mutant(s) not listed in {doc}: "
              "write a test that kills each, or add it with its reason")
        return 1
    print("mutants: every survivor is a known, argued one")
    return 0


if __name__ == "__main__":
    sys.exit(main())

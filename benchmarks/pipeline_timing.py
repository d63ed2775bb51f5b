"""Where the time of a Snakemake run goes: wall time per job and per rule, from its log.

    python benchmarks/pipeline_timing.py [.snakemake/log/<run>.snakemake.log]

Without an argument it reads the newest log. Job start and finish lines carry one-second
timestamps, so figures are rounded to seconds.
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
FINISHED = re.compile(r"^Finished jobid: (\d+)")


def parse(path: Path) -> tuple[list[tuple[str, str, float]], float]:
    now = None
    first = last = None
    pending: dict[str, list] = {}
    current = None
    jobs: list[tuple[str, str, float]] = []
    for line in path.read_text().splitlines():
        if m := STAMP.match(line):
            now = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            first = first or now
            last = now
        elif m := START.match(line):
            current = [m.group(1), "", now]
        elif current and (m := JOBID.match(line)):
            pending[m.group(1)] = current
        elif current and (m := WILDCARDS.match(line)):
            current[1] = m.group(1)
        elif m := FINISHED.match(line):
            rule, wc, started = pending.pop(m.group(1), (None, "", None))
            if rule and started and now:
                jobs.append((rule, wc, (now - started).total_seconds()))
    total = (last - first).total_seconds() if first and last else 0.0
    return jobs, total


def main(argv: list[str]) -> int:
    if argv:
        path = Path(argv[0])
    else:
        logs = sorted(Path(".snakemake/log").glob("*.snakemake.log"))
        if not logs:
            print("no Snakemake log under .snakemake/log", file=sys.stderr)
            return 2
        path = logs[-1]
    jobs, total = parse(path)
    per_rule: dict[str, list[float]] = defaultdict(list)
    for rule, _, sec in jobs:
        per_rule[rule].append(sec)
    print(f"{path}: {len(jobs)} jobs, {total:.0f} s wall from first to last job")
    print(f"{'rule':<24}{'jobs':>5}{'job-seconds':>13}{'longest':>9}")
    for rule, secs in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
        print(f"{rule:<24}{len(secs):>5}{sum(secs):>13.0f}{max(secs):>9.0f}")
    print("\nlongest jobs:")
    for rule, wc, sec in sorted(jobs, key=lambda j: -j[2])[:10]:
        print(f"  {sec:6.0f} s  {rule} {wc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Merges result directories of bench/fleet/run.py into one, for a matrix measured in several
sittings (the Ansible phases a time budget skipped, another H). Directories are read in the
order given; a later one's measured (H, tool, phase) replaces the earlier row and its runs, a
later "skipped" row never hides earlier numbers, and a later latency series replaces the
earlier one for its H. Writes the same files as run.py (summary.md with every sitting's
machine and versions, summary.csv, runs.csv, results.json). Reads and writes files only.

    python3 bench/fleet/merge.py OUT DIR [DIR...]
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as fleet  # noqa: E402  (run.py's tables and targets, so both print the same)


def key(r: dict) -> tuple:
    return (r["hosts"], r["tool"], r["phase"])


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, dirs = Path(sys.argv[1]), [Path(d) for d in sys.argv[2:]]
    rows: dict[tuple, dict] = {}
    runs: list[dict] = []
    lat: dict = {}
    sittings = []
    for d in dirs:
        data = json.loads((d / "results.json").read_text())
        sittings.append({"dir": str(d), **data["meta"]})
        for r in data["summary"]:
            k = key(r)
            if r["runs"] == 0:
                rows.setdefault(k, r)
                continue
            rows[k] = r
            runs = [x for x in runs if key(x) != k] + [x for x in data["runs"] if key(x) == k]
        lat.update(data.get("latency", {}))
    summary = list(rows.values())
    report = ("## Wall time, controller CPU, peak RSS, bytes sent\n\n" + fleet.table(summary) +
              "\n## Latency (mgmt, live run)\n\n" + fleet.latency_table(lat) +
              "\n## Targets\n\n" + "".join(f"- {t}\n" for t in fleet.targets(summary, lat)))
    print(report)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"merged_from": sittings}
    (out / "summary.md").write_text(f"{json.dumps(meta, indent=1)}\n\n{report}")
    (out / "results.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs,
                                                  "latency": lat}, indent=1))
    for name, items in (("runs.csv", runs), ("summary.csv", summary)):
        with open(out / name, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(items[0].keys()) if items else ["hosts"],
                               extrasaction="ignore")
            w.writeheader()
            w.writerows(items)
    return 0


if __name__ == "__main__":
    sys.exit(main())

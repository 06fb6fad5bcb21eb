"""Peak memory of every process a command starts (e.g. the ranks under torchrun).

    python scripts/rank_memory.py --out memory.json -- torchrun --nproc_per_node=2 train.py ...

Samples ``/proc`` every 0.2 s for the command's processes that run ``train.py`` (not the
launcher) and keeps,
per process, the peak of: RSS (``VmHWM``, resident pages, private and file-backed alike),
``RssAnon`` (private memory: a data set loaded into RAM lands here, once per process),
``RssFile`` (mapped files: a memory-mapped store lands here, shared through the page cache)
and ``Pss`` (each shared page divided among the processes that map it). Linux only.
"""

import argparse
import json
import subprocess
import time
from pathlib import Path

FIELDS = {"VmHWM": "peak_rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb"}


def descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        found = [int(c) for c in children.read_text().split()]
    except OSError:
        return []
    return found + [d for c in found for d in descendants(c)]


def sample(pid: int) -> dict[str, float] | None:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"train.py" not in command or b"torchrun" in command or b"distributed.run" in command:
            return None  # not a training process, or the launcher
        values = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in FIELDS:
                values[FIELDS[key]] = int(rest.split()[0]) / 1024
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                values["pss_mb"] = int(line.split()[1]) / 1024
        return values
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    process = subprocess.Popen(command)
    peaks: dict[int, dict[str, float]] = {}
    while process.poll() is None:
        for pid in descendants(process.pid) + [process.pid]:
            values = sample(pid)
            if values:
                peak = peaks.setdefault(pid, {})
                for key, value in values.items():
                    peak[key] = max(peak.get(key, 0.0), value)
        time.sleep(0.2)
    report = {"command": command, "exit": process.returncode,
              "processes": list(peaks.values()),
              "total": {key: sum(p.get(key, 0.0) for p in peaks.values())
                        for key in ("peak_rss_mb", "anon_mb", "file_mb", "pss_mb")}}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report["total"]))


if __name__ == "__main__":
    main()

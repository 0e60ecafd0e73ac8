"""What the UI labels say about each asset and check: its kinds and descriptions."""

import re
from collections import defaultdict
from pathlib import Path

import dagster as dg

from taxi_assets.definitions import defs

GRAPH = defs.resolve_asset_graph()


def test_every_check_says_what_it_asserts_and_whether_it_blocks():
    for key in GRAPH.asset_check_keys:
        spec = GRAPH.get_check_spec(key)
        assert spec.description, key
        says = "Blocking: " if spec.blocking else "Warns only: "
        assert says in spec.description, (key, spec.description)


def test_kinds_say_what_an_asset_holds_not_a_library_it_does_not_use():
    for key in GRAPH.get_all_asset_keys():
        kinds = GRAPH.get(key).kinds
        assert kinds, key
        if GRAPH.get(key).group_name.startswith(("yellow_", "green_")):
            assert "pandas" not in kinds, (key, kinds)  # trips move as Arrow batches
    # The zone lookup (265 rows) is a pandas DataFrame, and says so.
    assert "pandas" in GRAPH.get(dg.AssetKey("taxi_zones")).kinds


def test_labels_the_graph_shares_are_only_those_the_concepts_page_names():
    # The graph labels an asset by its key's last part; Dagster has no display name to set.
    by_label = defaultdict(set)
    for key in GRAPH.get_all_asset_keys():
        by_label[key.path[-1]].add(key.to_user_string())
    shared = {frozenset(keys) for keys in by_label.values() if len(keys) > 1}

    concepts = (Path(__file__).parents[1] / "docs" / "concepts.md").read_text()
    sentence = re.search(r"three pairs share a label there: (.*?) \(", concepts, re.DOTALL)
    pairs = re.findall(r"`([^`]+)` and `([^`]+)`", sentence.group(1))
    assert shared == {frozenset(pair) for pair in pairs}

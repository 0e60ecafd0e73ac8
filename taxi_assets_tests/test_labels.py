"""What the UI labels say about each asset and check: its kinds and descriptions."""

from collections import defaultdict

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
    assert "pandas" in GRAPH.get(dg.AssetKey("checked_taxi_zones")).kinds


def shared_labels(graph) -> dict[str, set[str]]:
    """The UI's labels more than one asset has: the graph labels an asset by its key's last
    part (Dagster has no display name to set), so two such assets look the same there."""
    by_label = defaultdict(set)
    for key in graph.get_all_asset_keys():
        by_label[key.path[-1]].add(key.to_user_string())
    return {label: keys for label, keys in by_label.items() if len(keys) > 1}


def test_every_asset_has_a_label_no_other_asset_has():
    assert shared_labels(GRAPH) == {}


def test_an_asset_whose_key_ends_as_another_ones_is_named():
    @dg.asset(key=["lake", "cleaned_yellow_trips"])
    def lookalike():
        return None

    with_lookalike = dg.Definitions.merge(defs, dg.Definitions(assets=[lookalike]))
    assert shared_labels(with_lookalike.resolve_asset_graph()) == {
        "cleaned_yellow_trips": {"cleaned_yellow_trips", "lake/cleaned_yellow_trips"}
    }

"""What the UI labels say about each asset and check: its kinds and descriptions."""

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
        assert "pandas" not in kinds, (key, kinds)  # trips move as Arrow batches

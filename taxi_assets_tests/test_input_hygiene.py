"""Input hygiene: a byte-order mark before the header is not part of a name, and an empty file
is called empty, not a header missing every column."""

from __future__ import annotations

import gzip

import pytest

from taxi_assets_tests.conftest import sample
from taxi_assets_tests.pipeline import materialize, pipeline_resources
from taxi_assets_tests.test_faults import failure_message

SAMPLE = "yellow_tripdata_2021-01.csv.gz"
SAMPLE_ROWS = 28_401


def test_a_header_after_a_utf8_byte_order_mark_loads(tmp_path, http_source, postgres):
    # As Excel's "CSV UTF-8" saves a file: the mark, then the TLC's header and rows unchanged.
    text = gzip.decompress(sample(SAMPLE).read_bytes())
    http_source.publish_bytes("2021-01", gzip.compress(b"\xef\xbb\xbf" + text))
    resources = pipeline_resources(tmp_path, http_source.url, postgres)

    result = materialize(resources, selection="raw_yellow_trips")

    [materialization] = result.asset_materializations_for_node("raw_yellow_trips")
    assert materialization.metadata["dagster/row_count"].value == SAMPLE_ROWS


@pytest.mark.parametrize(
    "content", [b"", gzip.compress(b"")], ids=["zero-byte file", "gzip of nothing"]
)
def test_an_empty_file_is_called_empty(tmp_path, http_source, postgres, content):
    http_source.publish_bytes("2021-01", content)
    resources = pipeline_resources(tmp_path, http_source.url, postgres)

    result = materialize(resources, selection="raw_yellow_trips", raise_on_error=False)

    assert not result.success
    message = failure_message(result)
    assert "yellow_tripdata_2021-01.csv.gz: is empty: it holds no header and no rows" in message
    assert "missing" not in message

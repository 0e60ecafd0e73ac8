"""A bad GOOGLE_APPLICATION_CREDENTIALS fails before Google's clients, whose errors quote its path."""

import json

import pytest

from taxi_assets.google_credentials import CredentialsSettingError, check_key_file
from taxi_assets.storage.bigquery_tables import bigquery_client
from taxi_assets.defs.resources import LakeResource

SERVICE_ACCOUNT = {
    "type": "service_account",
    "client_email": "etl@p.iam.gserviceaccount.com",
    "private_key": "-----BEGIN PRIVATE KEY-----\n...",
    "token_uri": "https://t",
}


def bad_key_files(folder):
    (folder / "not-json.json").write_text("this is not a key")
    (folder / "half.json").write_text(
        json.dumps({"type": "service_account", "client_email": "etl@p"})
    )
    (folder / "odd.json").write_text(json.dumps({"type": "api_key"}))
    return [
        folder / "missing.json",
        folder / "not-json.json",
        folder / "half.json",
        folder / "odd.json",
    ]


@pytest.mark.parametrize("case", range(4), ids=["missing", "not-json", "incomplete", "odd-type"])
def test_a_bad_key_file_fails_naming_the_setting_not_the_path(tmp_path, monkeypatch, case):
    folder = tmp_path / "secret-place"
    folder.mkdir()
    key_path = bad_key_files(folder)[case]
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_path))

    for use_google in (
        lambda: LakeResource(root="gs://taxi-lake").filesystem(),
        lambda: bigquery_client(project="taxi-project"),
    ):
        with pytest.raises(CredentialsSettingError) as error:
            use_google()
        assert "GOOGLE_APPLICATION_CREDENTIALS" in str(error.value)
        assert "secret-place" not in str(error.value) and key_path.name not in str(error.value)


def test_a_complete_key_file_or_none_passes(tmp_path, monkeypatch):
    key_path = tmp_path / "key.json"
    key_path.write_text(json.dumps(SERVICE_ACCOUNT))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_path))
    check_key_file()
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    check_key_file()

"""Checking GOOGLE_APPLICATION_CREDENTIALS before Google's clients read it.

Their errors for a missing or malformed key file quote the file's path, and a run's error is
shown in its logs and the UI. A key file's path says where a secret lives, so we fail first,
naming the setting rather than the path.
"""

from __future__ import annotations

import json

from taxi_assets import settings

KEY_SETTING = "GOOGLE_APPLICATION_CREDENTIALS"
# What google-auth needs of each kind of credentials file it accepts.
REQUIRED_FIELDS = {
    "service_account": ("client_email", "private_key", "token_uri"),
    "authorized_user": ("client_id", "client_secret", "refresh_token"),
    "external_account": ("audience", "subject_token_type", "credential_source"),
}


class CredentialsSettingError(ValueError):
    pass


def check_key_file() -> None:
    """Raise, without the path, unless the key file (if one is set) is a usable one."""
    path = settings.value(KEY_SETTING)
    if not path:
        return  # the default chain: gcloud's credentials or the metadata server
    problem = None
    try:
        with open(path) as key_file:
            key = json.load(key_file)
    except OSError as error:
        problem = f"names a file that cannot be read ({error.strerror})"
    except ValueError:
        problem = "names a file that is not JSON"
    else:
        kind = key.get("type") if isinstance(key, dict) else None
        missing = [f for f in REQUIRED_FIELDS.get(kind, ()) if not key.get(f)]
        if kind not in REQUIRED_FIELDS:
            problem = (
                f"names a file of credentials type {kind!r}, not one of {sorted(REQUIRED_FIELDS)}"
            )
        elif missing:
            problem = f"names a {kind} key without {missing}"
    if problem:
        raise CredentialsSettingError(
            f"{KEY_SETTING} {problem}; point it at a complete key file, or unset it to use "
            "the default credentials"
        )

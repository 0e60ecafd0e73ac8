#!/usr/bin/env bash
# Makes sure Debian's chromium is installed for the browser test (taxi_assets_tests/test_automation_live.py).
#
# Why Debian's package: the machine reaches only package registries, so Playwright's own browser
# download (`playwright install`) cannot work; Playwright drives this binary instead through
# `executable_path`. Idempotent: does nothing when /usr/bin/chromium exists.
# Without root and without chromium it only says so: the browser test then skips with the reason.
set -euo pipefail

CHROMIUM="${TAXI_CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$CHROMIUM" ]]; then
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "ensure-chromium: $CHROMIUM is missing and this is not root;" \
       "install it with: sudo apt-get install -y chromium" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-chromium: $CHROMIUM is missing and there is no apt-get to install it" >&2
  exit 0
fi
echo "ensure-chromium: installing Debian's chromium package for the browser test"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
"$CHROMIUM" --version

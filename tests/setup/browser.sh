#!/bin/sh
# Make sure Debian's chromium and chromium-driver are there for the browser tests.
#
# Run by `make test` before pytest. Quiet and instant when both are installed. When one is
# missing: as root with apt-get (CI, a fresh machine), install them; otherwise (a developer
# without root) say so and carry on: the browser tests then skip, except under CI=true,
# where they fail naming this script.
set -eu

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/setup/browser.sh: chromium or chromedriver not found, and not root with apt-get:" >&2
    echo "  the browser tests will skip (fail under CI=true). To run them: sudo apt-get install chromium chromium-driver" >&2
    exit 0
fi

echo "tests/setup/browser.sh: installing chromium and chromium-driver for the browser tests"
. "$(dirname "$0")/apt.sh"
apt_install tests/setup/browser.sh chromium chromium-driver

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "tests/setup/browser.sh: apt-get finished, but chromium or chromedriver is still missing" >&2
    exit 1
fi
echo "tests/setup/browser.sh: $(chromium --version 2>/dev/null), $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"

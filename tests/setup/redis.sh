#!/bin/sh
# Make sure Debian's redis-server is there for the tests that need a broker.
#
# Run by `make test` before pytest. Quiet and instant when redis-server is installed. When
# it is missing: as root with apt-get (CI, a fresh machine), install it; otherwise (a
# developer without root) say so and carry on: the tests that need Redis then skip, except
# under CI=true, where they fail naming this script. The tests start their own server on a
# free loopback port (tests/redisserver.py); nothing here starts one.
set -eu
here=$(dirname "$0")

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/setup/redis.sh: redis-server not found, and not root with apt-get:" >&2
    echo "  the Redis tests will skip (fail under CI=true). To run them: sudo apt-get install redis-server" >&2
    exit 0
fi

echo "tests/setup/redis.sh: installing redis-server for the broker tests"
. "$here/apt.sh"
apt_install tests/setup/redis.sh redis-server

if ! command -v redis-server >/dev/null 2>&1; then
    echo "tests/setup/redis.sh: apt-get finished, but redis-server is still missing" >&2
    exit 1
fi
echo "tests/setup/redis.sh: $(redis-server --version)"

# Sourced by the other scripts in tests/setup: install Debian packages quietly.
#
# `apt_install SCRIPT PACKAGE...` runs `apt-get update` at most once an hour across the
# scripts (a stamp in $TMPDIR), so a fresh machine missing both chromium and redis-server
# reads the package lists once; if an install then fails on lists that old, it updates and
# tries again. On failure it prints apt-get's output and returns 1.
apt_install() {
    apt_script=$1
    shift
    export DEBIAN_FRONTEND=noninteractive
    apt_stamp=${TMPDIR:-/tmp}/syndicate-apt-updated
    apt_log=$(mktemp)
    apt_status=0
    if [ -n "$(find "$apt_stamp" -mmin -60 2>/dev/null)" ] \
        && apt-get install -y -qq --no-install-recommends "$@" >"$apt_log" 2>&1; then
        :
    elif apt-get update -qq >"$apt_log" 2>&1 && touch "$apt_stamp" \
        && apt-get install -y -qq --no-install-recommends "$@" >>"$apt_log" 2>&1; then
        :
    else
        cat "$apt_log" >&2
        echo "$apt_script: apt-get could not install $*" >&2
        apt_status=1
    fi
    rm -f "$apt_log"
    return $apt_status
}

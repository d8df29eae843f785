#!/bin/sh
# Installs the services the tests start for real (each test starts its own instance on a free
# loopback port and kills it by PID): Debian's `mosquitto` MQTT broker for tests/test_mqtt.py,
# and Debian's `chromium`, the real browser that plays event clips in tests/test_evidence.py.
# Idempotent and quick when already installed: it checks for the binary first. Runs
# `apt-get update` only when the install fails without it. Needs apt-get (Debian/Ubuntu) and
# root, or sudo when not root. The package's own service is not needed (the tests run
# `mosquitto -p PORT` in the foreground); in a container without an init system it is not
# started anyway.
set -eu

packages="mosquitto chromium"

have_all() {
    # Debian puts it in /usr/sbin, which a non-root PATH may lack
    { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } &&
        command -v chromium >/dev/null 2>&1
}

if have_all; then
    echo "setup_services: $packages already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_services: apt-get not found; install $packages by hand" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "setup_services: not root and no sudo: cannot install $packages" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT INT TERM
apt_install() {
    # noninteractive: no debconf prompts on a CI runner
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages >>"$log" 2>&1
}

if ! apt_install; then
    # A fresh machine (or container) may have empty or stale package lists.
    echo "setup_services: apt-get install failed; running apt-get update and retrying" >&2
    $sudo apt-get update >>"$log" 2>&1 || { cat "$log" >&2; echo "setup_services: apt-get update failed" >&2; exit 1; }
    apt_install || { cat "$log" >&2; echo "setup_services: apt-get install failed" >&2; exit 1; }
fi

if ! have_all; then
    cat "$log" >&2
    echo "setup_services: installed $packages but a binary (mosquitto, chromium) was not found" >&2
    exit 1
fi
echo "setup_services: installed $packages"

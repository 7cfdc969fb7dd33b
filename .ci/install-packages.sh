#!/usr/bin/env bash
# Debian packages the tests need that pip does not provide: Prometheus (with promtool)
# and the Pushgateway, which the integration tests start on free loopback ports, and
# docker-compose, which validates docker-compose.yaml (`docker-compose config` needs no
# Docker engine); Chromium, which the browser tests drive headless through Playwright;
# PostgreSQL and Redis, which the scale-out stack (scripts/stack.py, make stack) runs.
# Idempotent: installs nothing when every binary is already there.
set -euo pipefail
declare -A package_of=(
    [prometheus]=prometheus
    [promtool]=prometheus
    [prometheus-pushgateway]=prometheus-pushgateway
    [docker-compose]=docker-compose
    [chromium]=chromium
    [redis-server]=redis-server
    [postgres]=postgresql
)
# Debian keeps PostgreSQL's server binaries off PATH, under /usr/lib/postgresql/<version>/bin.
have() {
    command -v "$1" > /dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$1" > /dev/null
}
packages=()
for binary in "${!package_of[@]}"; do
    if ! have "$binary"; then
        packages+=("${package_of[$binary]}")
    fi
done
if [ "${#packages[@]}" -eq 0 ]; then
    exit 0
fi
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo > /dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "install-packages: ${packages[*]} missing and this user cannot install packages;" >&2
        echo "install-packages: run 'apt-get install -y ${packages[*]}' as root" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt or dpkg (an unattended upgrade, a parallel job) rather than fail at once.
APT_WAIT=(-o DPkg::Lock::Timeout=600)
echo "install-packages: installing ${packages[*]}" >&2
$SUDO apt-get "${APT_WAIT[@]}" update -q > /dev/null
# --no-install-recommends: no node exporter, nothing beyond the binaries needed. Debian
# starts the packaged services where systemd runs; the tests start their own instances.
$SUDO apt-get "${APT_WAIT[@]}" install -y -q --no-install-recommends "${packages[@]}" > /dev/null

#!/usr/bin/env bash
# Servers the integration tests start: Debian's Prometheus (with promtool) and
# Pushgateway. Idempotent: installs nothing when the binaries are already there.
set -euo pipefail
missing=()
for binary in prometheus promtool prometheus-pushgateway; do
    if ! command -v "$binary" > /dev/null 2>&1; then
        missing+=("$binary")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo > /dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "install-servers: ${missing[*]} missing and this user cannot install packages;" >&2
        echo "install-servers: run 'apt-get install -y prometheus prometheus-pushgateway' as root" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-servers: installing prometheus and prometheus-pushgateway (missing: ${missing[*]})" >&2
$SUDO apt-get update -q > /dev/null
# --no-install-recommends: no node exporter, no services beyond the two binaries needed.
$SUDO apt-get install -y -q --no-install-recommends prometheus prometheus-pushgateway > /dev/null
# Debian starts the packaged services where systemd runs; the tests start their own
# instances on free loopback ports, so the packaged ones are left as the system has them.
prometheus --version 2>&1 | sed -n 1p
prometheus-pushgateway --version 2>&1 | sed -n 1p

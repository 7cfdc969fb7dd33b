#!/usr/bin/env bash
# Tools the tests call that pip does not provide: Debian's docker-compose, used to
# validate docker-compose.yaml (`docker-compose config` needs no Docker engine).
set -euo pipefail
if command -v docker-compose > /dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo > /dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "install-tools: docker-compose is missing and this user cannot install packages;" >&2
        echo "install-tools: run 'apt-get install -y docker-compose' as root" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q > /dev/null
$SUDO apt-get install -y -q --no-install-recommends docker-compose > /dev/null
docker-compose version --short

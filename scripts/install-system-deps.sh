#!/usr/bin/env bash
# Installs the Debian packages the engine and its tests need (Open MPI, fio, venv support).
# Only missing packages are installed; as non-root it only reports what is missing.
set -euo pipefail

packages=(python3-venv python3-dev gcc fio openmpi-bin libopenmpi-dev openssh-server openssh-client iproute2 util-linux python3-apt)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or install them yourself)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

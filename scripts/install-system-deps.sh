#!/usr/bin/env bash
# Installs the Debian packages the engine and its tests need (Open MPI, fio, venv support).
# --browser adds Chromium, in which the tests open the HTML report (tests/integration/test_report_html_browser.py).
# --tracing adds bpftrace, with which the tests run --enable-latency-tracing where the kernel lets it trace.
# --slurm adds the test harness's Slurm (slurm-wlm, munge: tests/fleet/slurm_cluster.py starts its own daemons), with
# the packages' services kept from starting at install. Only missing packages are installed; as non-root it only
# reports what is missing.
set -euo pipefail

packages=(python3-venv python3-dev gcc fio openmpi-bin libopenmpi-dev openssh-server openssh-client iproute2 util-linux python3-apt)
slurm=false
for arg in "$@"; do
    case "$arg" in
        --slurm) slurm=true; packages+=(slurm-wlm munge) ;;
        --browser) packages+=(chromium) ;;
        --tracing) packages+=(bpftrace) ;;
        *) echo "install-system-deps.sh: unknown argument '$arg' (allowed: --slurm, --browser, --tracing)" >&2; exit 2 ;;
    esac
done
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or install them yourself)" >&2
    exit 1
fi
# The test harness runs its own munged, slurmctld and slurmd; the packages' services must not start on this machine.
# A policy-rc.d of the machine's own is left as it is; ours is removed again however the install ends.
policy=/usr/sbin/policy-rc.d
if $slurm && [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\n# storagebench.kvcache: no service starts while its test packages install\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# Set up contain on a Debian 12 host, as root: system packages, a virtual
# environment in .venv and contain installed into it (its C core compiled).
#   scripts/setup.sh          what the library and its main job need
#   scripts/setup.sh --test   also the real peers the test suite talks to
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# slirp4netns: the default network of containers run by an ordinary user.
# musl-tools: the monitor every container start execs is built against musl,
# whose start-up is 20 times cheaper than glibc's in a VM (setup.py).
pkgs=(gcc libc6-dev libffi-dev musl-tools busybox-static iproute2 nftables tini python3-venv python3-dev slirp4netns)
if [ "$want_test" = 1 ]; then
    # fuse-overlayfs: the root filesystem of an ordinary user's containers where the kernel
    # refuses overlayfs in a user namespace (tests force it).
    pkgs+=(docker-registry skopeo debootstrap crun runc podman uidmap umoci curl apache2-utils passt fuse-overlayfs)
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing Debian packages (run as root to install): ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The registry package starts a service on :5000 in some set-ups; the tests
# start their own registries on free ports, so keep the packaged one quiet.
if [ "$want_test" = 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

# podman cannot raise rlimits on hosts without CAP_SYS_RESOURCE.
if [ "$want_test" = 1 ] && [ ! -e /etc/containers/containers.conf ]; then
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n' \
        > /etc/containers/containers.conf
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv 2>/dev/null || { rm -rf .venv; /usr/bin/python3 -m venv .venv; }
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$want_test" = 1 ]; then
    .venv/bin/python -m pip install -q -e '.[test]'
else
    .venv/bin/python -m pip install -q -e .
fi

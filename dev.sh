#!/usr/bin/env bash
# rehost's set-up and checks, for a fresh Debian 12 (or 13) machine, as root.
#   ./dev.sh demo    install everything, then run a whole campaign in the rehearsal lab
#   ./dev.sh test    install everything, then run the whole test suite (lint, types, tests)
#   ./dev.sh setup   install everything (apt packages, the venv with rehost in it)
#   ./dev.sh lint    ruff and mypy only
# Safe to run twice: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc pkg-config libvirt-dev
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
  openssh-server openssh-client rsync iproute2 util-linux mount procps coreutils openssl
  chromium
)
VENV=.venv

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "dev.sh: run me as root (the rehearsal lab needs namespaces and libvirtd)" >&2
    exit 2
  fi
}

apt_setup() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "dev.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

venv_setup() {
  local py=python3
  if [ ! -x "$VENV/bin/python" ]; then
    "$py" -m venv "$VENV"
  fi
  local log="$VENV/pip.log"
  : > "$log"
  "$VENV/bin/python" -m pip install -q --upgrade pip >>"$log" 2>&1 || true
  # rehost with its dev tools; the example site plugin is installed the way a site installs
  # its own (tests use it)
  if ! "$VENV/bin/python" -m pip install -q -e '.[dev]' -e examples/site-plugin >>"$log" 2>&1
  then
    cat "$log" >&2
    echo "dev.sh: pip install failed (log above, also in $log)" >&2
    exit 1
  fi
  "$VENV/bin/python" -c 'import rehost.core.cli, libvirt, pluggy' \
    || { echo "dev.sh: the venv is broken" >&2; exit 1; }
}

setup() {
  need_root
  apt_setup
  venv_setup
}

lint() {
  "$VENV/bin/ruff" check .
  "$VENV/bin/mypy"
}

case "${1:-}" in
  setup) setup ;;
  demo) setup; shift; exec "$VENV/bin/rehost" demo "$@" ;;
  test)
    setup
    shift
    lint
    # the lab test instance: keep clear of a lab someone keeps up by hand (instance 0)
    export REHOST_LAB_INSTANCE="${REHOST_LAB_INSTANCE:-7}"
    # the lab tests mostly wait (on ssh, libvirtd, the emulator): three workers, each with
    # labs of its own (tests/conftest.py), share two cores well; REHOST_TEST_WORKERS=0 runs
    # them in this process
    workers="${REHOST_TEST_WORKERS:-3}"
    if [ "$workers" = 0 ]; then exec "$VENV/bin/pytest" "$@"; fi
    exec "$VENV/bin/pytest" -n "$workers" --dist load --durations=15 "$@"
    ;;
  lint) lint ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac

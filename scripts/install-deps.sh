#!/usr/bin/env bash
# Installs the system packages wockd builds against and the programs its tests talk to.
# Idempotent: apt-get only runs when something is missing. Debian 12 (bookworm).
set -euo pipefail

build_pkgs=(libpurple-dev libglib2.0-dev libclang-dev pkg-config)
test_pkgs=(ngircd prosody lua-unbound mktorrent aria2 ejabberd biboumi)

want=("${build_pkgs[@]}")
if [ "${1:-}" = "--test" ]; then
  want+=("${test_pkgs[@]}")
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "install-deps: installing ${missing[*]}" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The Debian packages start their daemons; tests run their own instances on other ports.
for svc in prosody ngircd ejabberd biboumi; do
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop "$svc" 2>/dev/null || true; fi
  if [ -x "/etc/init.d/$svc" ]; then $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
done
# ejabberd's Erlang node may leave an epmd behind (Debian's erlang-base also socket-activates
# one); the ejabberd test needs none (its node uses ERL_DIST_PORT).
if [[ " ${missing[*]} " == *" ejabberd "* ]]; then
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop epmd.socket epmd.service 2>/dev/null || true; fi
  if command -v epmd >/dev/null 2>&1 && ! epmd -names 2>/dev/null | grep -q '^name '; then
    $SUDO epmd -kill >/dev/null 2>&1 || true
  fi
fi

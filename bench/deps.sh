#!/usr/bin/env bash
# Installs the Debian packages the benchmark suite needs, and only those missing.
# Safe to run any number of times: when everything is present it changes nothing.
set -euo pipefail

PKGS=(
  golang-go
  golang-github-gin-gonic-gin-dev
  golang-github-valyala-fasthttp-dev
  golang-github-lib-pq-dev
  postgresql
  sqlite3
  python3
  python3-flask
  gunicorn
  nginx-light
  haproxy
  libnginx-mod-http-lua
  lua-resty-core
  lua-cjson
  wrk
  slowhttptest
  gnuplot-nox
  gcc
)

missing=()
for p in "${PKGS[@]}"; do
  # dpkg -s also knows removed-but-configured packages: require "install ok installed".
  st=$(dpkg -s "$p" 2>/dev/null || true)
  case "$st" in
    *"Status: install ok installed"*) ;;
    *) missing+=("$p") ;;
  esac
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "bench/deps.sh: installing ${missing[*]}" >&2
SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# nginx, HAProxy and PostgreSQL are installed only as binaries for the harness
# (bench/run starts its own throwaway PostgreSQL server, bench/balancer-check its
# own balancer): keep the distribution's services from being started
# (policy-rc.d), so nothing listens on port 80 or 5432.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  made_policy=1
fi
rc=0
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
if [ $made_policy -eq 1 ]; then $SUDO rm -f "$policy"; fi
exit $rc

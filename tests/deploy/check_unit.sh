#!/usr/bin/env bash
# Checks deploy/systemd/rigtuned.service with systemd-analyze, offline (no
# systemd needed as PID 1):
#
#   check_unit.sh verify   UNIT RIGTUNED            the unit loads, ExecStart exists
#   check_unit.sh security UNIT RIGTUNED MAX_SCORE  exposure score <= MAX_SCORE (0-10)
#
# The unit's ExecStart names /usr/local/bin/rigtuned; the copy checked here
# points at the built binary instead, so that verify finds it.
set -euo pipefail
mode=$1 unit=$2 rigtuned=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|/usr/local/bin/rigtuned|$rigtuned|" "$unit" > "$work/rigtuned.service"
cd "$work"

case $mode in
  verify)
    out=$(systemd-analyze verify --man=no "$work/rigtuned.service" 2>&1) || {
      echo "$out"; exit 1; }
    # verify exits 0 on some warnings (unknown keys, bad values): fail on any.
    if [ -n "$out" ]; then echo "$out"; exit 1; fi
    echo "systemd-analyze verify: clean"
    ;;
  security)
    max=$4
    out=$(systemd-analyze security --offline=true --no-pager "$work/rigtuned.service")
    score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for rigtuned.service: \([0-9.]*\).*/\1/p')
    [ -n "$score" ] || { echo "$out"; echo "no exposure score in the output"; exit 1; }
    echo "exposure score: $score (limit $max)"
    awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }' || {
      printf '%s\n' "$out" | grep '✗'; exit 1; }
    ;;
  *) echo "usage: $0 verify|security UNIT RIGTUNED [MAX_SCORE]" >&2; exit 2 ;;
esac

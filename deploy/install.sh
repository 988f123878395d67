#!/usr/bin/env bash
# Installs rigtune as a system service. Idempotent; run as root.
#
#   deploy/install.sh [BUILD_DIR]      (default build/cpu; build/cuda on a GPU rig)
#   PREFIX=/opt/rigtune deploy/install.sh build/cuda
#
# Creates the rigtune user and group (member of video and render where they
# exist, for /dev/nvidia* on distributions that restrict them), installs the
# binaries, the systemd unit and /etc/rigtune/rigtuned.yaml (an edited one is
# kept), and reloads systemd when it runs.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build/cpu}
prefix=${PREFIX:-/usr/local}
log() { printf '[install] %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo $0)" >&2; exit 1; }
[ -x "$build/server/rigtuned" ] || {
  echo "install.sh: no rigtuned in $build; build first: cmake --build --preset cpu" >&2
  exit 1
}

if ! getent group rigtune >/dev/null; then
  groupadd --system rigtune
  log "created group rigtune"
fi
if ! getent passwd rigtune >/dev/null; then
  useradd --system --gid rigtune --home-dir /var/lib/rigtune --no-create-home \
    --shell /usr/sbin/nologin --comment "rigtune daemon" rigtune
  log "created user rigtune"
fi
for group in video render; do
  if getent group "$group" >/dev/null && ! id -nG rigtune | grep -qw "$group"; then
    usermod -aG "$group" rigtune
    log "added rigtune to group $group"
  fi
done

log "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null

# The unit names /usr/local/bin/rigtuned; another prefix gets its own path.
unit=$prefix/lib/systemd/system/rigtuned.service
if [ "$prefix" != /usr/local ]; then
  sed -i "s|/usr/local/bin/rigtuned|$prefix/bin/rigtuned|" "$unit"
fi
install -d -m 0755 /etc/rigtune
if [ ! -e /etc/rigtune/rigtuned.yaml ]; then
  install -m 0644 "$prefix/etc/rigtune/rigtuned.yaml" /etc/rigtune/rigtuned.yaml
  log "wrote /etc/rigtune/rigtuned.yaml"
else
  log "kept the existing /etc/rigtune/rigtuned.yaml"
fi
if [ "$prefix" != /usr/local ] && [ -d /etc/systemd/system ]; then
  ln -sf "$unit" /etc/systemd/system/rigtuned.service
fi

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  log "systemd reloaded"
else
  log "systemd is not running here; skipped daemon-reload"
fi

cat <<NEXT

Next steps:
  1. edit /etc/rigtune/rigtuned.yaml (model_roots, data_roots, output_roots, gpus)
  2. output roots outside /var/lib/rigtune need a drop-in: systemctl edit rigtuned
       [Service]
       ReadWritePaths=/srv/adapters
  3. systemctl enable --now rigtuned
  4. rigtune health; journalctl -u rigtuned -f
  Operations guide: $prefix/share/doc/rigtune/operations.md
NEXT

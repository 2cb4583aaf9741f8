#!/usr/bin/env bash
# Installs libinterimap from BUILD_DIR into a temporary prefix, builds
# examples/list-status against it through pkg-config only, and runs it on a
# throwaway Dovecot store reached as a pre-authenticated tunnel.
#   examples/run-example.sh [BUILD_DIR]   (default: build)
# .ci/run stages the install itself and exports INTERIMAP_PREFIX,
# PKG_CONFIG_PATH and LD_LIBRARY_PATH; then that install is used.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
# BUILD_DIR is used only when the caller did not stage an install already.
build=${1:-$src/build}
[ -f "$build/build.ninja" ] || build=$src/build
work=$(mktemp -d /tmp/interimap-example.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

if [ -n "${INTERIMAP_PREFIX:-}" ] && pkg-config --exists interimap; then
  # Already staged by the caller (.ci/run), with PKG_CONFIG_PATH and
  # LD_LIBRARY_PATH pointing at it.
  pcdir=$(dirname "$(pkg-config --variable=pcfiledir interimap)/interimap.pc")
  libdir=$(pkg-config --variable=libdir interimap)
else
  meson install -C "$build" --destdir "$work/root" --quiet
  pc=$(find "$work/root" -name interimap.pc -print -quit)
  pcdir=$(dirname "$pc")
  # The .pc file names the final prefix; point it at the staged copy.
  prefix=$(sed -n 's/^prefix=//p' "$pc")
  sed -i "s|^prefix=.*|prefix=$work/root$prefix|" "$pc"
  libdir=$(PKG_CONFIG_PATH="$pcdir" pkg-config --variable=libdir interimap)
fi
PKG_CONFIG_PATH="$pcdir" meson setup "$work/ex-build" "$src/examples/list-status" >/dev/null
ninja -C "$work/ex-build" >/dev/null

# A throwaway Dovecot store (see shared DOVECOT-NOTES): Dovecot will not
# serve mail as root, so the store goes to an unprivileged user then.
store="$work/store"
mkdir -p "$store/mail"
cat > "$store/dovecot.conf" <<CONF
ssl = no
base_dir = $store/run
state_dir = $store/state
mail_location = maildir:$store/mail
namespace inbox {
  inbox = yes
  separator = /
}
CONF
imap="$(doveconf -h libexec_dir)/imap"
wrap=""
if [ "$(id -u)" = 0 ]; then
  user=$(id -u interimap-test >/dev/null 2>&1 && echo interimap-test || echo nobody)
  chown -R "$user" "$store"
  wrap="setpriv --reuid=$(id -u "$user") --regid=$(id -g "$user") --clear-groups"
fi
cat > "$work/config" <<CONF
[remote]
type = tunnel
command = $wrap env -i PATH=/usr/bin:/bin HOME=$store USER=example $imap -c $store/dovecot.conf
null-stderr = yes
CONF
LD_LIBRARY_PATH="$libdir" "$work/ex-build/list-status" "$work/config" remote | tee "$work/out"
grep -q '^INBOX ' "$work/out"
echo "example: OK"

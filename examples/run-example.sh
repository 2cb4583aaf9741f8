#!/usr/bin/env bash
# Installs libinterimap from BUILD_DIR into a temporary prefix, builds
# examples/list-status and examples/sync-one against it through pkg-config
# only, and runs them on throwaway Dovecot stores reached as
# pre-authenticated tunnels: sync-one copies a message from one store to
# the other, list-status sees it there, a second sync-one copies nothing.
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
for ex in list-status sync-one; do
  PKG_CONFIG_PATH="$pcdir" meson setup "$work/build-$ex" "$src/examples/$ex" >/dev/null
  ninja -C "$work/build-$ex" >/dev/null
done

# Throwaway Dovecot stores (see shared DOVECOT-NOTES): Dovecot will not
# serve mail as root, so the stores go to an unprivileged user then.
imap="$(doveconf -h libexec_dir)/imap"
wrap=""
user=""
if [ "$(id -u)" = 0 ]; then
  user=$(id -u interimap-test >/dev/null 2>&1 && echo interimap-test || echo nobody)
  wrap="setpriv --reuid=$(id -u "$user") --regid=$(id -g "$user") --clear-groups"
fi
# make_store NAME: creates $work/NAME and prints its tunnel command.
make_store() {
  local store="$work/$1"
  mkdir -p "$store/mail/new" "$store/mail/cur" "$store/mail/tmp"
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
  echo "$wrap env -i PATH=/usr/bin:/bin HOME=$store USER=example $imap -c $store/dovecot.conf"
}
local_cmd=$(make_store local)
remote_cmd=$(make_store remote)
# One message in the local INBOX (a maildir file Dovecot picks up).
printf 'From: a@example.org\r\nTo: b@example.org\r\nSubject: example\r\n\r\nHello.\r\n' \
  > "$work/local/mail/new/1.example"
[ -n "$user" ] && chown -R "$user" "$work/local" "$work/remote"
chmod 755 "$work"

cat > "$work/config" <<CONF
[remote]
type = tunnel
command = $remote_cmd
null-stderr = yes
CONF
run() { LD_LIBRARY_PATH="$libdir" "$@"; }

# sync-one copies the message to the remote store, once.
run "$work/build-sync-one/sync-one" "$local_cmd" "$remote_cmd" "$work/state.db" INBOX | tee "$work/sync"
grep -qx 'synchronized INBOX' "$work/sync"
for pass in 1 2; do
  run "$work/build-list-status/list-status" "$work/config" remote | tee "$work/out"
  grep -q '^INBOX  *messages=1 ' "$work/out"
  [ "$pass" = 2 ] && break
  # Again: nothing new, nothing copied twice.
  run "$work/build-sync-one/sync-one" "$local_cmd" "$remote_cmd" "$work/state.db" INBOX 2>"$work/err" | tee "$work/sync"
  grep -qx 'synchronized INBOX' "$work/sync"
  if [ -s "$work/err" ]; then echo "second run said:"; cat "$work/err"; exit 1; fi
done
echo "example: OK"

#!/bin/bash
# A demonstration of interimap on a fresh machine, in a temporary directory:
#
#   bash examples/demo.sh
#
# It builds interimap if needed (in the Meson build directory
# $INTERIMAP_BUILD_DIR, default build/), sets up two throwaway Dovecot
# stores reached as pre-authenticated tunnels (no daemon, nothing listens
# on the network), seeds the "remote" one with sample mail (several
# mailboxes, flags, a nested mailbox, a subscription), writes an
# interimap configuration, runs interimap twice (a full copy, then a
# no-op) and prints what each side holds.  As root, the stores belong to
# the user interimap-test (made by .ci/run) or else nobody, since Dovecot
# does not serve mail as root.  Needs dovecot-imapd and python3; the
# temporary directory is removed at the end unless INTERIMAP_TEST_KEEP=1.
#
# INTERIMAP=/path/to/interimap runs that binary instead (e.g. the
# reference, /usr/bin/interimap).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

install_dependencies() {
  # Only what is missing, and only as root on Debian; the packaging scripts
  # must not start the system Dovecot (policy-rc.d exit 101 = "denied").
  local need=0 policy=/usr/sbin/policy-rc.d created=0
  command -v meson >/dev/null && command -v ninja >/dev/null && command -v g++ >/dev/null || need=1
  [ -x "$(doveconf -h libexec_dir 2>/dev/null || echo /usr/lib/dovecot)/imap" ] || need=1
  pkg-config --exists openssl sqlite3 zlib fmt libpcre2-8 2>/dev/null || need=1
  [ "$need" -eq 1 ] || return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "demo: missing build tools or Dovecot; as root on Debian this script installs them" >&2
    return 0
  fi
  echo "demo: installing the build dependencies and dovecot-imapd with apt-get"
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      meson ninja-build pkg-config g++ libssl-dev libsqlite3-dev zlib1g-dev libfmt-dev \
      libcli11-dev libpcre2-dev libgsasl-dev doctest-dev dovecot-core dovecot-imapd python3 util-linux >/dev/null ||
    { [ "$created" -eq 1 ] && rm -f "$policy"; return 1; }
  [ "$created" -eq 1 ] && rm -f "$policy"
  return 0
}

if [ -z "${INTERIMAP:-}" ]; then
  install_dependencies
  BUILD=${INTERIMAP_BUILD_DIR:-$ROOT/build}
  if [ ! -f "$BUILD/build.ninja" ]; then
    echo "demo: configuring a build in $BUILD"
    meson setup "$BUILD" "$ROOT" >/dev/null
  fi
  echo "demo: building interimap in $BUILD"
  ninja -C "$BUILD" tools/interimap/interimap >/dev/null
  INTERIMAP=$BUILD/tools/interimap/interimap
fi
export INTERIMAP
exec python3 "$HERE/demo.py"

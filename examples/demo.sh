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

if [ -z "${INTERIMAP:-}" ]; then
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

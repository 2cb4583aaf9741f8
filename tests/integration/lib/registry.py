#!/usr/bin/env python3
"""The integration tests' registry check (not a test of the project):

    registry.py DIR NAME...

NAME... are the scripts tests/integration/meson.build registers (its one
table, test_NAME.py each).  Fails (exit 1, naming them) when a
DIR/test_*.py file is not registered (it would never run), when a
registered script is missing, or when a name is registered twice.  meson
runs it twice: at configure time (meson setup fails) and as the test
'integration-registry', which also sees scripts added since."""

import collections
import glob
import os
import sys


def problems(directory, names):
    out = []
    registered = collections.Counter(f"test_{n}.py" for n in names)
    present = {os.path.basename(p) for p in glob.glob(os.path.join(directory, "test_*.py"))}
    for script in sorted(present - set(registered)):
        out.append(f"{script} is not in the table of {directory}/meson.build: it would never run")
    for script in sorted(set(registered) - present):
        out.append(f"{script} is in the table of {directory}/meson.build but does not exist")
    for script, n in sorted(registered.items()):
        if n > 1:
            out.append(f"{script} is registered {n} times")
    return out


def main():
    if len(sys.argv) < 3:
        print("usage: registry.py DIR NAME...", file=sys.stderr)
        return 2
    directory, names = sys.argv[1], sys.argv[2:]
    found = problems(directory, names)
    for p in found:
        print(f"integration registry: {p}", file=sys.stderr)
    if found:
        return 1
    print(f"integration registry: {len(names)} scripts, each registered once")
    return 0


if __name__ == "__main__":
    sys.exit(main())

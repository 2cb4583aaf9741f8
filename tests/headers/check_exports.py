#!/usr/bin/env python3
"""The shared library exports its public API and nothing of interimap::detail.

    check_exports.py LIBINTERIMAP.so

Reads the dynamic symbol table (nm -D, demangled), fails when a defined
symbol names interimap::detail (hidden visibility and INTERIMAP_API are
meant to keep those private), or when a public entry point is missing (the
export mark was lost).  Prints the counts.
"""
import subprocess
import sys

# A few entry points of each public area that must stay exported.
REQUIRED = [
    "interimap::Connection::open()",
    "interimap::Mailbox::select(",
    "interimap::SyncSession::run()",
    "interimap::SyncSettings::from_config(",
    "interimap::PullSession::run()",
    "interimap::StateDB::begin()",
    "interimap::UidSet::parse(",
    "interimap::Config::load(",
    "interimap::Logger::log(",
    "interimap::StopSignals::StopSignals()",
    "interimap::watch(",
    "interimap::report_dry_run(",
    "interimap::Connection::planned_changes()",
    "interimap::StateDB::differs_from_file()",
    "typeinfo for interimap::Error",
    "typeinfo for interimap::CommandError",
]


def main():
    lib = sys.argv[1]
    out = subprocess.run(["nm", "-D", "-C", "--defined-only", lib], check=True, capture_output=True, text=True).stdout
    symbols = [line.split(" ", 2)[2] for line in out.splitlines() if line.count(" ") >= 2]
    ours = [s for s in symbols if "interimap::" in s]
    leaked = [s for s in ours if "interimap::detail" in s]
    missing = [r for r in REQUIRED if not any(s.startswith(r) for s in symbols)]
    print(f"{lib}: {len(symbols)} defined dynamic symbols, {len(ours)} of interimap, "
          f"{len(leaked)} of interimap::detail")
    for s in leaked[:50]:
        print(f"  leaked: {s}")
    for r in missing:
        print(f"  missing: {r}")
    return 1 if leaked or missing else 0


if __name__ == "__main__":
    sys.exit(main())

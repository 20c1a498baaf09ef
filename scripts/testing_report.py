"""The counts in README.md's "Testing" section, from the test suite's own ledger.

``pytest tests/`` (the whole suite, as ``make test`` runs it) writes ``_build/test-ledger.json``: how many
tests passed, were skipped or xfailed, and -- counted by the ``ledger`` fixture where each test does it --
the bad inputs tried, the faults injected and the reruns compared (see ``tests/conftest.py``).

    python scripts/testing_report.py            # print the section's block
    python scripts/testing_report.py --write    # rewrite the block in README.md
    python scripts/testing_report.py --check    # exit 1 if README.md's block differs from the ledger

``make test`` runs ``--check`` right after pytest, so the README's numbers are those of the suite that passed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEDGER = REPO / "_build" / "test-ledger.json"
README = REPO / "README.md"
BEGIN = "<!-- testing-counts:begin (scripts/testing_report.py --write; do not edit by hand) -->"
END = "<!-- testing-counts:end -->"
ORDER = ("bad_input", "fault", "rerun")
N_TOP = 3


def render(ledger: dict) -> str:
    """The Markdown block (between the markers) for ``ledger``."""
    tests = ledger["tests"]
    lines = [BEGIN, "", "| the suite (`pytest tests/`) | count |", "| --- | ---: |"]
    for outcome in ("passed", "skipped", "xfailed", "failed"):
        if tests.get(outcome):
            lines.append(f"| tests {outcome} | {tests[outcome]:,} |")
    for kind in ORDER:
        lines.append(f"| {ledger['kinds'][kind]} | {ledger['totals'].get(kind, 0):,} |")
    lines.append("")
    for kind in ORDER:
        per_file: dict[str, int] = {}
        for nodeid, counts in ledger["by_test"].items():
            if counts.get(kind):
                f = nodeid.split("::")[0].removeprefix("tests/")
                per_file[f] = per_file.get(f, 0) + counts[kind]
        top = sorted(per_file.items(), key=lambda kv: (-kv[1], kv[0]))[:N_TOP]
        if top:
            label = ledger["kinds"][kind].split(" (")[0]
            lines.append(f"- {label.capitalize()}, most in: " + ", ".join(f"`{f}` ({n:,})" for f, n in top) + ".")
    lines += ["", END]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"error: {README.name} has no testing-counts block (markers {BEGIN!r} ... {END!r})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + block + tail


def load_ledger(path: Path = LEDGER) -> dict:
    if not path.exists():
        raise SystemExit(f"error: {path} is missing: run the whole suite first (`make pytest` or "
                         f"`.venv/bin/python -m pytest tests/`)")
    ledger = json.loads(path.read_text())
    if ledger.get("exitstatus") != 0:
        raise SystemExit(f"error: {path} is from a suite that did not pass (exit status {ledger.get('exitstatus')})")
    return ledger


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the block in README.md")
    mode.add_argument("--check", action="store_true", help="fail if README.md's block differs from the ledger")
    ap.add_argument("--ledger", type=Path, default=LEDGER)
    ap.add_argument("--readme", type=Path, default=README)
    a = ap.parse_args(argv)
    block = render(load_ledger(a.ledger))
    if not (a.write or a.check):
        print(block)
        return 0
    text = a.readme.read_text()
    new = replace_block(text, block)
    if a.write:
        if new != text:
            tmp = a.readme.with_suffix(".md.tmp")
            tmp.write_text(new)
            tmp.replace(a.readme)
        print(f"{a.readme.name}: testing counts {'updated' if new != text else 'already current'}")
        return 0
    if new != text:
        print(f"error: the testing counts in {a.readme.name} differ from this run of the suite ({a.ledger}).\n"
              f"  Run `make testing-report` (scripts/testing_report.py --write) and commit README.md.\n\n"
              f"The suite's block:\n{block}", file=sys.stderr)
        return 1
    print(f"{a.readme.name}: testing counts match the suite")
    return 0


if __name__ == "__main__":
    sys.exit(main())

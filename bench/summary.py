"""The table `make bench` ends with: each section adds its headline figures (what was measured,
the figure, the issue's goal) as it prints its own lines, and `print_summary` shows them in the
order the sections ran, so one screen holds the whole run. It prints; it never asserts."""

from __future__ import annotations

_ROWS: list[tuple[str, str, str, str]] = []


def add(section: str, what: str, figure: str, goal: str = "") -> None:
    _ROWS.append((section, what, figure, goal))


def print_summary() -> None:
    if not _ROWS:
        return
    width = max(len(what) for _, what, _, _ in _ROWS)
    print("\nsummary (ratios are measured side by side in one run; absolute figures are noisy)")
    print(f"  {'section':12s} {'what':{width}s}  {'figure':52s} goal")
    for section, what, figure, goal in _ROWS:
        print(f"  {section:12s} {what:{width}s}  {figure:52s} {goal}")

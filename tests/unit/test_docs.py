"""The documentation: README is the entry point (short, first screen useful, links alive), and no page
speaks of a machine's paths or of how the work was organised."""

from __future__ import annotations

import re

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.quick

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
MAX_README_LINES = 200
FIRST_SCREEN = 40
PAGES = (
    "architecture.md",
    "distributed.md",
    "cli.md",
    "history.md",
    "etl.md",
    "forecasting.md",
    "dashboards.md",
    "operations.md",
    "binance-emulator.md",
    "benchmarks.md",
)
# A path of someone's machine. `/var/tmp/cryptoflow-pg-*` and `/var/tmp` alone are the documented
# home of moved and throwaway clusters (`db reap --base-dir` default), so they stay allowed.
MACHINE_PATH = re.compile(r"(?<![\w.:/-])/(?:work|tmp|root|home)/|/var/tmp/(?!cryptoflow-pg-)")
WORK_LABEL = re.compile(r"\bsessions?\s+\d+|#\d+\s+session", re.IGNORECASE)
# [text](target): the target up to a space, a '#' or the closing parenthesis.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s#]*)(?:#[^)\s]*)?(?:\s[^)]*)?\)")


def _pages():
    return [README, *sorted(DOCS.rglob("*.md"))]


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_readme_first_screen_has_the_commands_the_urls_and_the_layout():
    first = "\n".join(README.read_text().splitlines()[:FIRST_SCREEN])
    for needed in (
        "make run",
        "make test",
        "http://127.0.0.1:8080",
        "http://127.0.0.1:8088",
        "#layout",
    ):
        assert needed in first, f"{needed!r} not in README's first {FIRST_SCREEN} lines"


@pytest.mark.parametrize("page", PAGES)
def test_docs_page_exists(page):
    assert (DOCS / page).is_file(), page


def test_decision_records_are_dated():
    records = [p.name for p in (DOCS / "decisions").glob("*.md") if p.name != "README.md"]
    assert records, "no decision records in docs/decisions/"
    undated = [n for n in records if not re.fullmatch(r"\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.md", n)]
    assert not undated, f"name decision records YYYY-MM-DD-title.md: {undated}"


def test_no_machine_paths():
    found = {
        str(p.relative_to(PROJECT_ROOT)): m.group(0)
        for p in _pages()
        for m in [MACHINE_PATH.search(p.read_text())]
        if m
    }
    assert not found, f"absolute paths of a machine in the docs: {found}"


def test_no_work_organisation_labels():
    found = {
        str(p.relative_to(PROJECT_ROOT)): m.group(0)
        for p in _pages()
        for m in [WORK_LABEL.search(p.read_text())]
        if m
    }
    assert not found, f"the docs describe the product, not how the work was organised: {found}"


def test_readme_relative_links_exist():
    targets = {
        t
        for t in LINK.findall(README.read_text())
        if t and "://" not in t and not t.startswith("mailto:")
    }
    missing = sorted(t for t in targets if not (PROJECT_ROOT / t).exists())
    assert not missing, f"README.md links to missing files: {missing}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("see [a](docs/a.md) and [b](docs/b.md#part)", ["docs/a.md", "docs/b.md"]),
        ('![shot](docs/s.png "title")', ["docs/s.png"]),
        ("[here](#layout)", [""]),
    ],
)
def test_the_link_scan(text, expected):
    assert LINK.findall(text) == expected


@pytest.mark.parametrize(
    "text, bad",
    [
        ("cd /work/main", True),
        ("in /tmp/x", True),
        ("/root/.cache", True),
        ("/home/me", True),
        ("/var/tmp/other", True),
        ("/var/tmp/cryptoflow-pg-<hash>", False),
        ("default `/var/tmp`)", False),
        ("file:///data/landing", False),
        ("include/tmp/x", False),
        ("hdfs://namenode:8020/cryptoflow", False),
    ],
)
def test_the_path_scan(text, bad):
    assert bool(MACHINE_PATH.search(text)) is bad

"""README stays a short front page, and every link in it and in docs/ leads to a file that exists."""

import re

import pytest
from roberta_diffusion.paths import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # markdown links and images: ](target) or ](target#anchor)


def test_readme_is_short_and_keeps_its_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150, "README is the front page: move measured results to docs/results.md"
    block = re.search(r"<!-- test-command -->\n```bash\n(.+)\n```\n<!-- /test-command -->", text)
    assert block and "pytest" in block.group(1), ".ci/run reads the test command between these markers"
    assert "roberta-diffusion generate " in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    targets = [t for t in _LINK.findall(page.read_text()) if "://" not in t]
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to files that do not exist: {missing}"


def test_every_test_named_by_a_reliability_claim_exists():
    """docs/cli.md's reliability table names the test holding each claim: each named file and function is there."""
    root = ROOT
    text = (root / "docs" / "cli.md").read_text()
    table = text[text.index("## Reliability"):]
    table = table[: table.index("\n## ", 1)] if "\n## " in table[1:] else table
    current = None
    named = re.findall(r"`(tests/[\w/]+\.py)?(?:::)?(test_\w+)?`|`::(test_\w+)`", table)
    assert named
    for path, function, continued in named:
        if path:
            current = root / path
            assert current.exists(), path
        name = function or continued
        if name:
            assert f"def {name}(" in current.read_text(), f"{current.name} has no {name}"

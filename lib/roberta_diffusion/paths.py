"""Where things live. Every notebook, test and CLI command builds its paths from here.

Override with environment variables when the repository is installed elsewhere:
``ROBERTA_DIFFUSION_ROOT`` (project root), ``ROBERTA_DIFFUSION_DATA`` (corpora folder, default
``<root>/../shared/data``), ``ROBERTA_DIFFUSION_RUNS`` (outputs, default ``<root>/runs``),
``ROBERTA_DIFFUSION_CACHE`` (tokenised corpora, default ``<runs>/cache``; kept when a staged run moves RUNS).
"""

import os
import re
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(os.environ.get("ROBERTA_DIFFUSION_ROOT", Path(__file__).resolve().parents[2]))
DATA = Path(os.environ.get("ROBERTA_DIFFUSION_DATA", ROOT.parent / "shared" / "data"))
SAMPLE_TEXT = ROOT / "data" / "sample.txt"  # tiny text shipped with the repo, for tests
WEIGHTS = ROOT / "weights"
RUNS = Path(os.environ.get("ROBERTA_DIFFUSION_RUNS", ROOT / "runs"))
CACHE = Path(os.environ.get("ROBERTA_DIFFUSION_CACHE", RUNS / "cache"))
NOTEBOOKS = ROOT / "notebooks"
PROFILES = ROOT / "profiles"

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

WIKI_TRAIN = DATA / "wikipedia-2018-extract" / "train.txt.gz"
WIKI_VALID = DATA / "wikipedia-2018-extract" / "valid.txt"
WIKITEXT2_VALID = DATA / "wikitext-2-raw" / "wiki.valid.raw"

# Shipped models. Where they are missing, callers fall back to a tiny random model and say so.
SHIPPED_TOKENIZER = WEIGHTS / "tokenizer"
SHIPPED_MLM = WEIGHTS / "roberta-diffusion-small"
SHIPPED_AR = WEIGHTS / "gpt2-small-baseline"
SHIPPED_FAST = WEIGHTS / "roberta-diffusion-small-fast"  # SDTT student of SHIPPED_MLM: its fewest-steps samples
SHIPPED_JUDGE = WEIGHTS / "judge"  # a third GPT-2, sharing no weights with the pair: it scores samples


# folders under runs/ that are not runs: a run of that name would mix its results into them (compared in lower
# case, for file systems that ignore case); the hidden ones (.staging, .locks) are refused by the leading dot
RESERVED_RUN_NAMES = {"cache": "the tokenised-corpus cache (paths.CACHE)", "logs": "benchmarks.ablate's logs"}


def run_name(value, where: str = "run_name") -> str:
    """A plain folder name under ``runs/``: no separators, no ``..``, no leading dot (hidden staging/lock
    folders start with one), none of ``RESERVED_RUN_NAMES``."""
    if not isinstance(value, str) or not _RUN_NAME.match(value) or ".." in value:
        raise ValueError(f"{where} {value!r}: use letters, digits, '.', '_' or '-' (no '/' or '..'), "
                         "starting with a letter or digit, so the run stays inside runs/")
    if value.lower() in RESERVED_RUN_NAMES:
        raise ValueError(f"{where} {value!r} is reserved: runs/{value.lower()} holds "
                         f"{RESERVED_RUN_NAMES[value.lower()]}; choose another run name")
    return value


def run_dir(name: str) -> Path:
    """``runs/<name>``, created on demand; ``name`` must be a plain folder name (the run stays inside runs/)."""
    path = RUNS / run_name(name)
    path.mkdir(parents=True, exist_ok=True)
    return path


CORPORA = {
    "wikipedia-train": WIKI_TRAIN,
    "wikipedia-valid": WIKI_VALID,
    "wikitext2-valid": WIKITEXT2_VALID,
    "sample": SAMPLE_TEXT,
}


def corpus(name_or_path: str) -> str | Path:
    """A corpus alias (``wikipedia-train``, ``wikipedia-valid``, ``wikitext2-valid``, ``sample``), a path
    (relative ones from the project root), or a hub dataset name, which is passed through."""
    if name_or_path in CORPORA:
        return CORPORA[name_or_path]
    path = Path(resolve(name_or_path))
    return path if path.exists() else name_or_path


def resolve(path_or_name: str | None) -> str | None:
    """Relative paths from the project root (notebooks run with any working directory); names pass through."""
    if path_or_name is None:
        return None
    path = Path(path_or_name)
    if not path.is_absolute() and (ROOT / path).exists():
        return str(ROOT / path)
    return str(path_or_name)


@contextmanager
def atomic_path(path):
    """A temporary path beside ``path`` (same suffix, unique per process) to write to; on success it replaces
    ``path`` in one rename, so a reader never sees half a file, and on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def portable(value: str) -> str:
    """A path as saved files should record it: relative to the project root when it lies under the root (or
    under a ``runs/`` folder, as on another clone of the project), so a shipped config names no machine's
    folders; any other string is returned as it is."""
    path = Path(value)
    if not path.is_absolute():
        return value
    for base, prefix in ((RUNS, Path("runs")), (ROOT, Path("."))):
        if path.is_relative_to(base):
            return str(prefix / path.relative_to(base))
    if "runs" in path.parts:  # a run folder of another checkout (e.g. the GPU machine's /work/main/runs/x)
        return str(Path(*path.parts[path.parts.index("runs"):]))
    return value

"""Model cards: a README.md beside the weights saying what they are, how they were made and how well they do."""

from __future__ import annotations

import json
from pathlib import Path


def write_model_card(folder, title: str, summary: str, facts: dict, metrics: dict | None = None,
                     usage: str = "") -> Path:
    """Write ``folder/README.md``: a title, a paragraph, a table of facts and the metrics as JSON."""
    folder = Path(folder)
    rows = "\n".join(f"| {k} | {v} |" for k, v in facts.items())
    text = f"# {title}\n\n{summary}\n\n| | |\n|---|---|\n{rows}\n"
    if usage:
        text += f"\n## Use\n\n```python\n{usage.strip()}\n```\n"
    if metrics:
        text += f"\n## Metrics\n\n```json\n{json.dumps(metrics, indent=2)}\n```\n"
    path = folder / "README.md"
    path.write_text(text)
    return path

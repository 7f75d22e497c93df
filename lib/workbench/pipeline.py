"""Run the four notebooks headless, in order, with a YAML profile of parameters.

- ``run_pipeline(profile)``: papermill (kernel ``python3``, explicit timeout) on ``.ipynb`` files that jupytext
  makes from the py:percent sources; executed notebooks, GIFs, plots and ``metrics.json`` land in
  ``runs/<name>/``.

Profiles are checked whole (YAML, sections, every parameter's name, type and range) before anything runs; a
run holds the lock of its name and is staged, then swapped into ``runs/<name>/`` only when every notebook
succeeded (``runs.staged_run``).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import yaml
from roberta_diffusion import paths, train
from roberta_diffusion.paths import NOTEBOOKS, PROFILES, ROOT

from . import runs, settings
from .runs import RunFailed, redirect_runs, staged_run

ORDER = ("01_explore_masking", "02_finetune", "03_generate", "04_compare")


class _UniqueKeys(yaml.SafeLoader):
    """YAML whose mappings refuse a key given twice: plain YAML keeps the last one silently, so a profile that
    sets max_steps twice would train with whichever came second."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (lines {seen[key]} and {line}): keep one", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_profile(profile: str | Path) -> dict:
    """A profile is ``profiles/<name>.yaml`` (or a path): ``name``, ``timeout``, ``common`` and one mapping of
    parameters per notebook (``02_finetune: {...}``); ``common`` is given to every notebook."""
    path = Path(profile)
    if not path.exists():
        path = PROFILES / f"{profile}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml")))
        raise FileNotFoundError(f"profile {profile!r} not found: use one of {known} or a YAML path")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeys) or {}  # noqa: S506 - a SafeLoader
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ValueError(f"profile {path} is not valid YAML{at}: fix the file ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"profile {path} must be a mapping of sections (name, timeout, common, {', '.join(ORDER)})")
    unknown = set(data) - {"name", "timeout", "common", "notebooks", *ORDER}
    if unknown:
        raise ValueError(f"profile {path.name} has unknown sections {sorted(unknown)}: use {', '.join(ORDER)}")
    data.setdefault("name", path.stem)
    check_profile(data, path.name)
    return data


def check_profile(data: dict, where: str) -> None:
    """Every section a mapping, every parameter known to its notebook with the right type and range."""
    paths.run_name(data["name"], f"profile {where}: name")
    timeout = data.get("timeout", 1800)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ValueError(f"profile {where}: timeout={timeout!r} must be a number of seconds above 0")
    known = known_parameters()
    for section in ("common", *ORDER):
        if not isinstance(data.get(section) or {}, dict):
            raise ValueError(f"profile {where}: section {section!r} must be a mapping of parameter: value")
    for key, value in (data.get("common") or {}).items():
        users = [name for name in ORDER if key in known[name]]
        settings.parameter(key, value, known[users[0]] if users else {k: v for n in ORDER for k, v in known[n].items()},
                         f"profile {where}: common")
    for name in ORDER:
        params = {**(data.get("common") or {}), **(data.get(name) or {})}
        for key, value in (data.get(name) or {}).items():
            settings.parameter(key, value, known[name], f"profile {where}: {name}")
        settings.parameters({k: v for k, v in params.items() if k in known[name]}, known[name], f"profile {where}: {name}")
    # what train.train would refuse, refused now, before the run's lock
    # over TrainConfig's defaults, which notebook 02's cell restates
    settings.train_config(train.TrainConfig(**train_params(data)), where=f"profile {where}: 02_finetune")


def known_parameters() -> dict[str, dict]:
    """Each notebook's parameters, ``name -> (annotation, default)``: notebook 02's are ``TrainConfig``'s fields
    (its cell restates them, tests/test_train.py holds the two equal), the others' are read from their cells."""
    return {name: settings.train_settings() if name == "02_finetune" else settings.notebook_parameters(NOTEBOOKS / f"{name}.py")
            for name in ORDER}


def train_params(profile: dict) -> dict:
    """The profile's 02_finetune values (its ``common`` ones included) that are training settings, ``TrainConfig``'s
    fields: what ``finetune`` and the training benchmarks build their config from."""
    known = settings.train_settings()
    return {k: v for k, v in notebook_params(profile, "02_finetune").items() if k in known}


def notebook_params(profile: dict, notebook: str) -> dict:
    return {"run_name": profile["name"], **(profile.get("common") or {}), **(profile.get(notebook) or {})}


def to_ipynb(py_path: Path, out_path: Path) -> Path:
    """jupytext py:percent -> .ipynb (explicit conversion, never --sync: that goes by file times)."""
    import jupytext

    notebook = jupytext.read(py_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(notebook, out_path, fmt="ipynb")
    return out_path


def run_pipeline(profile: str | Path, only: list[str] | None = None, log=print, check: bool = True) -> Path:
    """Execute the notebooks of ``ORDER`` (or ``only``) with papermill into a staged copy of ``runs/<name>``, and
    swap it in when all succeeded (and, with ``check`` and no ``only``, ``check_run`` finds no problem); returns
    ``runs/<name>``. A failure raises ``runs.RunFailed`` and leaves the previous results as they were."""
    import papermill  # the dev extra: only the pipeline needs it

    config = load_profile(profile)
    bad = [name for name in only or () if name not in ORDER]
    if bad:
        raise ValueError(f"notebook {bad[0]!r} is not one of the workbook's: use one of {', '.join(ORDER)}")
    name = config["name"]
    timeout = int(config.get("timeout", 1800))
    timings = {}
    with runs.lock(name), staged_run(name, say=log) as root, redirect_runs(root):
        run = root / name
        for notebook in only or ORDER:
            source = to_ipynb(NOTEBOOKS / f"{notebook}.py", run / "source" / f"{notebook}.ipynb")
            start = time.time()
            log(f"[pipeline] {notebook} ...")
            try:
                with ipc_kernel() as km:
                    papermill.execute_notebook(str(source), str(run / f"{notebook}.ipynb"),
                                               parameters=notebook_params(config, notebook), kernel_name="python3",
                                               execution_timeout=timeout, cwd=str(ROOT), progress_bar=False,
                                               log_output=False, km=km)
            except papermill.PapermillExecutionError as err:
                raise RunFailed(f"notebook {notebook} failed ({err.ename}: {err.evalue}); the previous results of run "
                                f"{name!r} are kept; the failed attempt is in {run}") from None
            record_final_paths(run / f"{notebook}.ipynb")
            timings[notebook] = round(time.time() - start, 1)
            log(f"[pipeline] {notebook} done in {timings[notebook]} s")
        (run / "pipeline_timings.json").write_text(json.dumps(timings, indent=2))
        problems = check_run(run) if check and not only else []
        if problems:
            raise RunFailed(f"run {name!r} has problems: {'; '.join(problems)}; the previous results are kept; "
                            f"the attempt is in {run}")
    return paths.RUNS / name


def record_final_paths(notebook: Path) -> None:
    """papermill records the paths it ran with: the staging folder's, gone once the run is swapped in. Record
    where they will be (``runs/<name>/...``, ``paths.portable``)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    recorded = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if recorded.get(key):
            recorded[key] = paths.portable(recorded[key])
    nbformat.write(nb, notebook)


@contextmanager
def ipc_kernel(kernel_name: str = "python3"):
    """A kernel manager whose kernel talks over unix sockets in a private temporary folder. Over TCP (Jupyter's
    default) ipykernel 7 warns on every start that the channel is unencrypted; these sockets only this user
    can reach, so there is nothing to warn about."""
    from jupyter_client.manager import KernelManager

    with tempfile.TemporaryDirectory(prefix="rd-kernel-") as folder:
        km = KernelManager(kernel_name=kernel_name, transport="ipc", ip=str(Path(folder) / "k"))
        try:
            yield km
        finally:  # a client given a manager leaves its kernel running: it is ours to stop
            if km.has_kernel:
                km.shutdown_kernel(now=True)


def check_run(run: Path, mask_token: str = "<mask>") -> list[str]:
    """Problems with a pipeline run folder (empty list = fine): executed notebooks without errors, the
    GIFs, finite metrics, no mask token left in generated text."""
    import nbformat

    problems = []
    for name in ORDER:
        path = run / f"{name}.ipynb"
        if not path.exists():
            problems.append(f"{path.name} missing")
            continue
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    problems.append(f"{path.name}: error {output.get('ename')}: {output.get('evalue')}")
    for gif in ("generation.gif", "compare.gif"):
        if not (run / gif).exists() or (run / gif).stat().st_size == 0:
            problems.append(f"{gif} missing")
    metrics_path = run / "metrics.json"
    if not metrics_path.exists():
        problems.append("metrics.json missing")
    else:
        metrics = json.loads(metrics_path.read_text())
        for key, value in _flatten(metrics):
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"metrics.json: {key} is {value}")
            if isinstance(value, str) and mask_token in value and key.endswith("text"):
                problems.append(f"metrics.json: {key} still holds {mask_token}")
    return problems


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj

"""The new sampling options through the command line: every registered policy runs, and the knobs reach the sampler."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from roberta_diffusion.policies import POLICIES
from roberta_diffusion.sampling import Sampling
from workbench import cli


@pytest.mark.parametrize("policy", list(POLICIES))
def test_every_registered_policy_runs_from_the_command_line(tiny_dirs, policy, tmp_path):
    out = tmp_path / "g.json"
    extra = ["--remask", "0.2"] if POLICIES[policy].remask == "lowest" else []
    assert cli.main(["generate", "The cat", "--model", str(tiny_dirs / "mlm"), "--steps", "4", "--max-len", "24",
                     "--policy", policy, "--device", "cpu", "--quiet", "--json", str(out), *extra]) == 0
    saved = json.loads(out.read_text())
    expected = replace(Sampling(steps=4).with_policy(policy), **({"remask": 0.2} if extra else {}))
    assert Sampling(**saved["sampling"]) == expected  # an unset knob: the policy's own default (calibrated's is 0)


@pytest.mark.parametrize("policy", [p for p, rule in POLICIES.items() if rule.knob])
def test_a_policys_knob_left_unset_starts_at_its_measured_default(tiny_dirs, policy, tmp_path):
    out = tmp_path / "g.json"
    assert cli.main(["generate", "The cat", "--model", str(tiny_dirs / "mlm"), "--steps", "4", "--max-len", "24",
                     "--policy", policy, "--device", "cpu", "--quiet", "--json", str(out)]) == 0
    rule = POLICIES[policy]
    assert json.loads(out.read_text())["sampling"][rule.knob] == rule.knob_default


def test_twin_guided_generation_keeps_one_text_and_says_how(tiny_dirs, tmp_path):
    out = tmp_path / "g.json"
    assert cli.main(["generate", "The cat", "--model", str(tiny_dirs / "mlm"), "--guide", str(tiny_dirs / "ar"),
                     "--candidates", "3", "--pick", "importance", "--steps", "3", "--max-len", "24", "--device", "cpu",
                     "--quiet", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["candidates"] == 3 and saved["pick"] == "importance" and saved["batch"] == 1


def test_corrections_reach_the_guide_and_add_their_frames(tiny_dirs, tmp_path):
    out = tmp_path / "g.json"
    assert cli.main(["generate", "The cat", "--model", str(tiny_dirs / "mlm"), "--guide", str(tiny_dirs / "ar"),
                     "--corrections", "2", "--correction-share", "0.2", "--steps", "3", "--max-len", "24", "--device",
                     "cpu", "--quiet", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["corrections"] == 2 and saved["correction_share"] == 0.2 and saved["candidates"] == 1
    assert saved["steps"] == 3 and saved["forward_passes"] == 3 + 2 * 2  # the sampler's steps, then two passes a round


def test_remask_reaches_the_sampler(tiny_dirs, tmp_path):
    out = tmp_path / "g.json"
    assert cli.main(["generate", "The cat", "--model", str(tiny_dirs / "mlm"), "--policy", "remdm", "--remask", "0.3",
                     "--steps", "4", "--max-len", "24", "--device", "cpu", "--quiet", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["remask"] == 0.3


@pytest.mark.parametrize("argv,match", [
    (["--remask", "0.2"], "remdm"),  # the knob of another policy: refused, never ignored
    (["--policy", "remdm", "--remask", "1.5"], "remask"),
    (["--candidates", "0"], "--candidates"),
    (["--candidates", "2", "--pick", "loudest"], "--pick"),
    (["--guide", "weights/gpt2-small-baseline"], "--candidates"),
    (["--corrections", "-1"], "--corrections"),
    (["--corrections", "2", "--correction-share", "0"], "--correction-share"),
    (["--corrections", "2", "--correction-share", "nan"], "--correction-share"),
    (["--correction-share", "0.2"], "--corrections"),
    (["--corrections", "2", "--candidates", "2", "--pick", "importance"], "--corrections"),
    (["--policy", "calibrated", "--position-decay", "-1"], "--position-decay"),
])
def test_bad_sampling_options_are_one_line(tiny_dirs, argv, match, capsys):
    code = cli.main(["generate", "The cat", "--model", str(tiny_dirs / "mlm"), "--steps", "3", "--max-len", "24",
                     "--device", "cpu", "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and match in err and len(err.strip().splitlines()) == 1


def test_compare_refuses_guidance(tiny_dirs, capsys):
    assert cli.main(["compare", "The cat", "--model", str(tiny_dirs / "mlm"), "--ar-model", str(tiny_dirs / "ar"),
                     "--candidates", "4", "--device", "cpu"]) == 2
    assert "generate --candidates" in capsys.readouterr().err


def test_a_policy_list_takes_old_names_once_each_and_refuses_unknown_ones(capsys):
    from workbench import checks

    assert checks.policy_list("--policies", "redraw,seed-remask,random") == ["redraw", "random"]
    assert "use --policies redraw" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--policies greedy: use a comma list of"):
        checks.policy_list("--policies", "greedy")


def test_a_profile_may_still_name_the_old_policy_but_not_an_unknown_one():
    from workbench import settings

    known = {"policy": ("str", "random")}
    settings.parameter("policy", "seed-remask", known, "profile p, 03_generate")  # accepted: Sampling renames it
    with pytest.raises(ValueError, match="policy='greedy': use one of"):
        settings.parameter("policy", "greedy", known, "profile p, 03_generate")

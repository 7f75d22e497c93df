"""The step scrubber and panels without a browser, the pure renderers, and the GIF writers' layout."""

import io

import pytest
import torch
from PIL import Image
from roberta_diffusion import generate_ar, generate_diffusion, layout, models, viz
from roberta_diffusion.canvas import prompt_canvas
from roberta_diffusion.paths import SAMPLE_TEXT
from roberta_diffusion.policies import POLICIES
from roberta_diffusion.sampling import Sampling
from roberta_diffusion.trace import Trace
from workbench.panel import clock_panel, generation_panel, step_scrubber


@pytest.fixture(scope="module")
def trace(mlm, tokenizer):
    return generate_diffusion(mlm, tokenizer, "The harbour town", steps=6, policy="confidence", max_len=40, seed=3)


def text_trace(tokenizer, text: str, prefix: int = 4, steps: int = 3, length: int | None = None) -> Trace:
    """A Trace whose final canvas is ``text`` (cut to ``length`` tokens), revealed left to right in ``steps``."""
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    final = torch.tensor(ids[:length] if length else ids)
    n = len(final)
    history = []
    for step in range(steps + 1):
        shown = prefix + (n - prefix) * step // steps
        row = final.clone()
        row[shown:] = tokenizer.mask_token_id
        history.append(row.view(1, n))
    pinned = torch.zeros(1, n, dtype=torch.bool)
    pinned[:, :prefix] = True
    return Trace(ids=torch.stack(history), pinned=pinned, attention=torch.ones(1, n, dtype=torch.long),
                 confidence=torch.rand(1, n), step_times=[0.1] * steps, mask_token_id=tokenizer.mask_token_id,
                 tokenizer=tokenizer)


def final_glyphs(trace, tokenizer) -> str:
    """Every visible character of the final canvas (what the last frame must show), whitespace dropped."""
    return "".join(viz.render_text(trace, trace.steps, tokenizer).split())


def assert_inside_and_apart(fig, texts):
    """Each text lies inside the figure, and no two overlap (word pieces may touch)."""
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    boxes = [t.get_window_extent(renderer) for t in texts]
    for text, box in zip(texts, boxes, strict=True):
        assert box.x0 >= -0.5 and box.x1 <= width + 0.5 and box.y0 >= -0.5 and box.y1 <= height + 0.5, text.get_text()
    # overlap: same line (vertical ranges overlap by more than half a line) and horizontal ranges overlap
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            same_line = min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5 * min(a.height, b.height)
            assert not (same_line and min(a.x1, b.x1) - max(a.x0, b.x0) > 1.0), (a, b)


def test_words_keep_their_pieces_together():
    parts = layout.words([" Cal", "iph", "ant", "ian", ",", " ░", "\n", "The"], [(1, 0, 0, 1)] * 5 + [None] * 3)
    assert [(lead, [p[0] for p in word]) for lead, word in parts] == [
        (" ", ["Cal", "iph", "ant", "ian", ","]), (" ", ["░"]), ("\n", []), ("", ["The"])]


def test_pieces_of_a_word_abut_and_lines_wrap_between_words(tokenizer):
    import matplotlib.pyplot as plt

    fig = plt.figure(dpi=90)
    try:
        measure = layout.Measure(fig, 9)
        pieces = [" Cal", "iph", "ant", "ian"] + [" word"] * 30
        runs = layout.layout(pieces, [(0.5, 0.5, 0.5, 1)] * len(pieces), 300, measure)
    finally:
        plt.close(fig)
    first = runs[:4]
    assert all(b.x == pytest.approx(a.x + a.width) for a, b in zip(first, first[1:], strict=False))
    assert all(run.x + run.width <= 300 + 1e-6 for run in runs)
    assert runs[-1].line > 0 and {r.line for r in first} == {0}
    starts = [r for r in runs[4:] if r.x == 0]  # each wrapped line starts with a whole word, no leading space
    assert starts and all(r.text == "word" for r in starts)


def test_long_titles_wrap_inside_their_panel():
    import matplotlib.pyplot as plt

    board = layout.Board(2, panel_width=4.0, font_size=8.0, dpi=80)
    try:
        title = "diffusion (redraw, 10 steps, a label far too long for one row of a panel, or even two) · step 3/10 · 40% masked"
        rows = board.title_lines(title)
        assert len(rows) > 2 and " ".join(rows).replace(" · ", " ").split() == title.replace(" · ", " ").split()
        assert all(board.title_measure(row, "bold") <= board.text_width for row in rows)
    finally:
        plt.close(board.fig)


@pytest.mark.parametrize("case", ["paragraphs", "canvas-256"])
def test_last_frame_draws_every_token(tokenizer, case):
    if case == "paragraphs":
        text = "\n\n".join(["The first paragraph is here, with Caliphantian words."] * 3 + ["A short end.\n"] * 4)
        trace = text_trace(tokenizer, text)
    else:
        trace = text_trace(tokenizer, SAMPLE_TEXT.read_text(), prefix=16, steps=5, length=256)
        assert trace.ids.shape[-1] == 256
    board, steps, draw = viz.animation_board(trace, tokenizer)
    try:
        for frame in range(len(steps)):  # every frame fits the figure, not just the last
            assert_inside_and_apart(board.fig, draw(frame))
        texts = draw(len(steps) - 1)
        title, body = texts[0], texts[1:]
        assert f"step {trace.steps}/{trace.steps}" in title.get_text()
        assert "".join(t.get_text() for t in body).replace(" ", "") == final_glyphs(trace, tokenizer)
    finally:
        import matplotlib.pyplot as plt

        plt.close(board.fig)


def test_comparison_last_frame_shows_both_texts_whole(trace, causal_lm, tokenizer):
    ar = generate_ar(causal_lm, tokenizer, "The harbour town", max_len=60, seed=0)
    long_label = "diffusion (confidence, 6 steps, a label long enough to need two rows)"
    board, frames, draw = viz.comparison_board([trace, ar], [tokenizer, tokenizer], [long_label, "autoregressive"],
                                               n_frames=5)
    try:
        texts = draw(len(frames) - 1)
        assert_inside_and_apart(board.fig, texts)
        renderer = board.fig.canvas.get_renderer()
        half = board.fig.bbox.width / 2
        for side, run in enumerate((trace, ar)):
            mine = [t for t in texts if (t.get_window_extent(renderer).x0 >= half) == bool(side)]
            titles = [t for t in mine if t.get_fontweight() == "bold" and t.get_fontsize() > board.font_size]
            body = [t for t in mine if t not in titles]
            assert "✓" in "".join(t.get_text() for t in titles)  # the run had finished by the last frame
            assert "".join(t.get_text() for t in body).replace(" ", "") == final_glyphs(run, tokenizer)
    finally:
        import matplotlib.pyplot as plt

        plt.close(board.fig)


def test_terminal_and_gif_agree_on_the_masked_share(mlm, tokenizer):
    start = prompt_canvas(tokenizer, "The harbour town", 8, 40)
    out = io.StringIO()
    progress = viz.print_progress(tokenizer, tokenizer.mask_token_id, 5, stream=out,
                                  generated=lambda: ~start.pinned[0] & start.attention[0].bool())
    run = generate_diffusion(mlm, tokenizer, "The harbour town", steps=5, policy="random", prefix_len=8, max_len=40,
                             on_step=progress)
    printed = [line.split(" · ")[1] for line in out.getvalue().splitlines() if line.startswith("--- step")]
    titled = [viz.step_title(run, s).split(" · ")[2] for s in range(1, run.steps + 1)]
    assert printed == titled and printed[0] != "100% masked" and printed[-1] == "0% masked"


def test_slider_drives_the_rendered_step(trace, tokenizer):
    box = step_scrubber(trace, tokenizer)
    slider, view = box.slider, box.view
    assert (slider.min, slider.max, slider.value) == (0, trace.steps, trace.steps)
    for step in (0, 2, trace.steps):
        slider.value = step
        assert view.value == viz.render_step(trace, step, tokenizer)
        assert f"step {step}/{trace.steps}" in view.value


def test_generation_panel_generates_and_scrubs(mlm, tokenizer, trace):
    panel = generation_panel(mlm, tokenizer, trace=trace, max_len=40)
    assert panel.trace is trace and panel.view.value == viz.render_step(trace, trace.steps, tokenizer)
    panel.slider.value = 1
    assert panel.view.value == viz.render_step(trace, 1, tokenizer)
    panel.colour.value = "confidence"
    assert panel.view.value == viz.render_step(trace, 1, tokenizer, color_by="confidence")
    panel.prompt.value, panel.policy.value, panel.steps.value = "A new prompt", "entropy", 3
    panel.button.click()
    assert panel.trace is not trace and panel.trace.steps == 3 and panel.trace.settings["policy"] == "entropy"
    assert panel.slider.max == 3 and panel.slider.value == 3
    assert panel.view.value == viz.render_step(panel.trace, 3, tokenizer, color_by="confidence")
    before = panel.trace
    panel.prompt.value = "   "
    panel.button.click()  # a bad prompt is reported in the panel; the last run stays on screen
    assert "error" in panel.status.value and panel.trace is before


def test_generation_panel_shows_each_policys_own_knob_and_passes_it(mlm, tokenizer, trace):
    panel = generation_panel(mlm, tokenizer, trace=trace, max_len=40)
    knobs = panel.knobs
    assert set(knobs) == {"remask", "position_decay", "order_temperature"}
    panel.policy.value = "random"
    assert all(w.layout.display == "none" for w in knobs.values()) and panel.settings().remask == 0
    panel.policy.value, knobs["remask"].value, panel.steps.value = "remdm", 0.3, 4
    assert knobs["remask"].layout.display == "" and panel.settings().remask == 0.3
    panel.button.click()
    assert panel.trace.settings["policy"] == "remdm" and panel.trace.settings["remask"] == 0.3
    panel.policy.value = "calibrated"
    assert knobs["position_decay"].layout.display == "" and knobs["remask"].layout.display == "none"
    panel.policy.value, knobs["order_temperature"].value = "sampled", 2.5
    assert [k for k, w in knobs.items() if w.layout.display == ""] == ["order_temperature"]
    assert panel.settings().order_temperature == 2.5 and panel.settings().remask == 0


@pytest.mark.parametrize("policy", [p for p, rule in POLICIES.items() if not rule.reads_corpus])
def test_generation_panel_runs_every_policy_with_its_sampling(mlm, tokenizer, trace, policy):
    """The panel builds a ``Sampling`` from its controls and the trace records exactly that one (a policy reading
    corpus counts the tiny tokenizer lacks is covered by the comparison test's "not run" row)."""
    panel = generation_panel(mlm, tokenizer, trace=trace, max_len=30, sampling=Sampling(seed=3, steps=4))
    panel.policy.value = policy
    panel.button.click()
    assert "error" not in panel.status.value
    assert Sampling.of(panel.trace.settings) == panel.settings() == Sampling(seed=3, steps=4).with_policy(policy)


def test_clock_panel_scrubs_both_runs_on_one_clock(trace, causal_lm, tokenizer):
    ar = generate_ar(causal_lm, tokenizer, "The harbour town", max_len=30, seed=0)
    clock = clock_panel([trace, ar], [tokenizer, tokenizer], ["diffusion", "gpt-2"])
    for now in (0.0, trace.total_time, clock.end / 2, clock.end):
        clock.clock.value = now
        assert clock.view.value == viz.render_clock([trace, ar], [tokenizer, tokenizer], clock.clock.value,
                                                    ["diffusion", "gpt-2"])
    clock.clock.value = 0.0
    assert "step 0/" in clock.view.value and clock.view.value.count("✓") == 0
    clock.clock.value = clock.end
    assert clock.view.value.count("✓") == 2


def test_render_step_shows_masks_falling_to_none(trace, tokenizer):
    masks = [viz.render_step(trace, s, tokenizer).count('class="mask"') for s in range(trace.steps + 1)]
    assert masks[0] == int(trace.generated[0].sum())  # everything generated starts masked
    assert masks[-1] == 0
    assert all(a >= b for a, b in zip(masks, masks[1:], strict=False))


def test_render_text_keeps_the_prompt_and_drops_masks_at_the_end(trace, tokenizer):
    assert viz.render_text(trace, 0, tokenizer).startswith("The harbour town")
    assert viz.MASK_GLYPH in viz.render_text(trace, 0, tokenizer)
    assert viz.MASK_GLYPH not in viz.render_text(trace, trace.steps, tokenizer)


def test_render_step_rejects_a_step_outside_the_trace(trace, tokenizer):
    with pytest.raises(ValueError, match="outside"):
        viz.render_step(trace, trace.steps + 1, tokenizer)


def test_confidence_colouring_differs_from_step_colouring(trace, tokenizer):
    assert viz.render_step(trace, trace.steps, tokenizer, color_by="confidence") != viz.render_step(trace, trace.steps, tokenizer)
    with pytest.raises(ValueError):
        viz.render_step(trace, 1, tokenizer, color_by="loudness")


def test_gif_has_one_frame_per_step_plus_the_start(trace, tokenizer, tmp_path):
    path = viz.animate(trace, tokenizer, tmp_path / "gen.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == trace.steps + 1
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


def test_comparison_gif_uses_one_clock(trace, causal_lm, tokenizer, tmp_path):
    ar = generate_ar(causal_lm, tokenizer, "The harbour town", max_len=30, seed=0)
    frames = viz.compare_frames([trace, ar], 7)
    for (t0, s0), (t1, s1) in zip(frames, frames[1:], strict=False):
        assert t1 >= t0 and all(b >= a for a, b in zip(s0, s1, strict=False))
    path = viz.animate_comparison([trace, ar], [tokenizer, tokenizer], tmp_path / "cmp.gif", n_frames=7)
    with Image.open(path) as gif:
        assert gif.n_frames == 7


def test_policy_comparison_runs_every_policy_and_says_when_one_cannot(mlm, tokenizer, tmp_path):
    import copy

    from roberta_diffusion.policies import POLICIES
    from workbench import cells

    bare = copy.deepcopy(tokenizer)
    bare.name_or_path = str(tmp_path)  # a folder with no corpus counts
    rows = cells.compare_policies(mlm, bare, "The cat", Sampling(steps=3), max_len=20)
    assert [r["policy"] for r in rows] == list(POLICIES)
    skipped = [r for r in rows if r["text (start)"].startswith("not run:")]
    assert [r["policy"] for r in skipped] == [n for n, p in POLICIES.items() if p.reads_corpus]
    assert all("forward passes" in r for r in rows if r not in skipped)


def test_generation_panel_switches_to_another_model_with_its_steps_and_tokenizer(mlm, tokenizer, trace):
    other = models.fresh_mlm(tokenizer, "tiny", seed=5)
    panel = generation_panel(mlm, tokenizer, trace=trace, max_len=30, sampling=Sampling(steps=4),
                             others={"distilled": (other, tokenizer, 2)})
    assert panel.model_choice.layout.display == "" and list(panel.model_choice.options) == ["this model", "distilled"]
    panel.model_choice.value = "distilled"
    assert panel.model is other and panel.steps.value == 2
    panel.button.click()
    assert panel.trace.steps == 2 and "error" not in panel.status.value
    mine = generate_diffusion(other, tokenizer, panel.prompt.value, panel.settings(), max_len=30)
    assert torch.equal(panel.trace.final, mine.final)  # the run is the chosen model's
    panel.model_choice.value = "this model"
    assert panel.model is mlm and panel.steps.value == 4
    assert generation_panel(mlm, tokenizer, trace=trace).model_choice.layout.display == "none"  # one model: no box


def test_generation_panel_lets_the_twin_choose_and_correct_when_given_one(mlm, causal_lm, tokenizer, trace):
    from roberta_diffusion.guided import generate_guided

    assert generation_panel(mlm, tokenizer, trace=trace, max_len=30).twin.layout.display == "none"  # no twin: hidden
    panel = generation_panel(mlm, tokenizer, trace=trace, max_len=30, sampling=Sampling(steps=4, seed=1),
                             guide=causal_lm, corrections=2)
    assert panel.twin.layout.display == "" and panel.corrections.value == 2
    panel.button.click()
    assert "error" not in panel.status.value and "4 steps + 2 correction rounds (8 passes)" in panel.status.value
    assert panel.trace.steps == panel.slider.max == 8  # the slider scrubs the rounds' frames too
    mine = generate_guided(mlm, causal_lm, tokenizer, panel.prompt.value, panel.settings(), candidates=1,
                           corrections=2, **panel.canvas)
    assert torch.equal(panel.trace.ids, mine.ids)
    panel.candidates.value, panel.corrections.value = 3, 0
    panel.button.click()
    assert panel.trace.settings["candidates"] == 3 and panel.trace.steps == 4 and panel.trace.final.shape[0] == 1
    panel.candidates.value = 1
    panel.button.click()  # neither: the plain sampler, no twin pass
    assert "candidates" not in panel.trace.settings


def test_the_model_comparison_gives_each_model_its_row_on_one_prompt_and_seed(mlm, tokenizer):
    from workbench import cells

    other = models.fresh_mlm(tokenizer, "tiny", seed=5)
    rows = cells.compare_models({"a": (mlm, tokenizer), "b": (other, tokenizer)}, "The cat", Sampling(steps=3),
                                max_len=20)
    assert [(r["model"], r["steps"]) for r in rows] == [("a", 3), ("b", 3)]
    again = generate_diffusion(other, tokenizer, "The cat", Sampling(steps=3), max_len=20)
    assert rows[1]["text (start)"] == again.completions[0][:100]

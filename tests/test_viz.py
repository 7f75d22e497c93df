"""The step scrubber without a browser, the pure renderers, and the GIF writers."""

import pytest
from PIL import Image
from roberta_diffusion import generate_ar, generate_diffusion, viz


@pytest.fixture(scope="module")
def trace(mlm, tokenizer):
    return generate_diffusion(mlm, tokenizer, "The harbour town", steps=6, strategy="confidence", max_len=40, seed=3)


def test_slider_drives_the_rendered_step(trace, tokenizer):
    box = viz.step_scrubber(trace, tokenizer)
    slider, view = box.children
    assert (slider.min, slider.max, slider.value) == (0, trace.steps, trace.steps)
    for step in (0, 2, trace.steps):
        slider.value = step
        assert view.value == viz.render_step(trace, step, tokenizer)
        assert f"step {step}/{trace.steps}" in view.value


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
    assert frames[0][1] == [0, 0] and frames[-1][1] == [trace.steps, ar.steps]
    for (t0, s0), (t1, s1) in zip(frames, frames[1:], strict=False):
        assert t1 >= t0 and all(b >= a for a, b in zip(s0, s1, strict=False))
    path = viz.animate_comparison([trace, ar], [tokenizer, tokenizer], tmp_path / "cmp.gif", n_frames=7)
    with Image.open(path) as gif:
        assert gif.n_frames == 7

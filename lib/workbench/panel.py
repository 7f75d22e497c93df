"""ipywidgets panels for a live notebook. They only wire controls to the pure renderers in ``viz``
(``render_step``, ``render_clock``): whatever they show is what those functions return for the current control
values, which is what the tests check. Papermill keeps no widget state; the GIFs are the static record.

- ``step_scrubber(trace)``: a step slider (and play button) over one finished run.
- ``GenerationPanel`` (``generation_panel``): prompt, policy, steps, temperature / top-k / top-p, a Generate
  button, the step slider with play, and colouring by commit step or confidence; given the AR twin as ``guide``,
  also twin-guided candidates and twin-pointed correction rounds (``guided.py``), whose frames the slider scrubs.
- ``ClockPanel`` (``clock_panel``): one wall-clock slider scrubbing several runs (diffusion and GPT-2) at once.
"""

from __future__ import annotations

from dataclasses import replace

import ipywidgets as widgets
from roberta_diffusion import defaults, viz
from roberta_diffusion.guided import generate_guided
from roberta_diffusion.policies import POLICIES
from roberta_diffusion.sampler import generate_diffusion
from roberta_diffusion.sampling import Sampling

COLOURINGS = {"commit step": "step", "confidence": "confidence"}


def _steps_row(n_steps: int, interval_ms: int = 400):
    """A step slider with a play button driving it (linked in the browser, so playing needs no round trip
    to start; every value change still reaches the kernel, which re-renders)."""
    slider = widgets.IntSlider(value=n_steps, min=0, max=n_steps, step=1, description="step", continuous_update=True,
                               layout=widgets.Layout(width="70%"))
    slider.add_class("rd-step-slider")  # the browser test finds it by this class
    play = widgets.Play(value=n_steps, min=0, max=n_steps, step=1, interval=interval_ms, description="play")
    widgets.jslink((play, "value"), (slider, "value"))
    widgets.jslink((play, "max"), (slider, "max"))
    return slider, play, widgets.HBox([play, slider])


def _view(html: str):
    view = widgets.HTML(html)
    view.add_class("rd-canvas")
    return view


def step_scrubber(trace, tokenizer, sample: int = 0, color_by: str = "step"):
    """A slider over the steps of ``trace`` with the rendered canvas below. Returns the VBox;
    ``box.children[0]`` is the slider row (play button, slider), ``box.children[1]`` the HTML it drives."""
    slider, _, row = _steps_row(trace.steps)
    view = _view(viz.render_step(trace, trace.steps, tokenizer, sample, color_by))
    slider.observe(lambda change: setattr(view, "value", viz.render_step(trace, change["new"], tokenizer, sample,
                                                                           color_by)), names="value")
    box = widgets.VBox([row, view])
    box.slider, box.view = slider, view
    return box


class GenerationPanel:
    """Generate from a prompt with chosen settings and scrub through the steps. ``trace``: a run to show
    first (else one is generated from the initial settings). ``generate()`` is what the button calls."""

    def __init__(self, model, tokenizer, trace=None, prompt: str = "The history of the city",
                 sampling: Sampling | None = None, prefix_len: int | None = defaults.PREFIX_LEN, max_len: int = 96,
                 color_by: str = "step", others: dict | None = None, guide=None, corrections: int = 0):
        self.model, self.tokenizer, self.guide = model, tokenizer, guide
        self.base = sampling or Sampling.readable()  # what the controls start from; the rest (seed, schedule) stays
        # label -> (model, tokenizer, steps): models to switch to, each starting at the steps it was measured best at
        self.models = {"this model": (model, tokenizer, self.base.steps), **(others or {})}
        self.canvas = dict(prefix_len=prefix_len, max_len=max_len)
        start, short = self.base, dict(style={"description_width": "initial"})
        self.prompt = widgets.Textarea(value=prompt, description="prompt", layout=widgets.Layout(width="95%"))
        self.policy = widgets.Dropdown(options=list(POLICIES), value=start.policy, description="policy")
        self.steps = widgets.BoundedIntText(value=start.steps, min=1, max=max_len, description="steps", **short)
        self.temperature = widgets.BoundedFloatText(value=start.temperature, min=0.01, max=10, step=0.1,
                                                    description="temperature", **short)
        self.top_k = widgets.BoundedIntText(value=start.top_k, min=0, max=len(tokenizer), description="top-k", **short)
        self.top_p = widgets.BoundedFloatText(value=start.top_p, min=0.01, max=1.0, step=0.05, description="top-p",
                                              **short)
        # each policy's own knob, shown only with its policy (another policy would refuse it, not ignore it)
        self.knobs = {rule.knob: widgets.BoundedFloatText(
            value=getattr(start.with_policy(rule.name), rule.knob), min=0.0, max=rule.knob_max, step=0.05,
            description=rule.knob.replace("_", " "), **short) for rule in POLICIES.values() if rule.knob}
        # the twin's part, shown only with a twin to read: N candidates kept by its likelihood, R correction rounds
        self.candidates = widgets.BoundedIntText(value=1, min=1, max=32, description="candidates", **short)
        self.corrections = widgets.BoundedIntText(value=corrections, min=0, max=64, description="corrections", **short)
        self.twin = twin = widgets.HBox([self.candidates, self.corrections])
        twin.layout.display = "" if guide is not None else "none"
        self.model_choice = widgets.Dropdown(options=list(self.models), description="model")
        self.model_choice.layout.display = "" if len(self.models) > 1 else "none"
        self.model_choice.observe(self._switch_model, names="value")
        self.policy.observe(self._show_knobs, names="value")
        self._show_knobs()
        self.button = widgets.Button(description="Generate", button_style="primary")
        self.button.add_class("rd-generate")
        self.colour = widgets.ToggleButtons(options=list(COLOURINGS), description="colour by",
                                            value={v: k for k, v in COLOURINGS.items()}[color_by])
        self.status = widgets.HTML()
        self.trace = None
        self.slider, self.play, steps_row = _steps_row(1)
        self.view = _view("")
        self.button.on_click(self.generate)
        self.slider.observe(self.render, names="value")
        self.colour.observe(self.render, names="value")
        knobs = widgets.HBox([self.policy, self.steps, self.temperature, self.top_k, self.top_p, *self.knobs.values()])
        # its own row: a wider knobs row would overflow a narrow notebook and push the step slider aside
        self.widget = widgets.VBox([self.prompt, self.model_choice, knobs, twin, widgets.HBox([self.button, self.colour]),
                                    self.status, steps_row, self.view])
        if trace is not None:
            self.show(trace)
        else:
            self.generate()

    def _switch_model(self, change) -> None:
        self.model, self.tokenizer, steps = self.models[change["new"]]
        self.steps.value = steps
        self.top_k.max = len(self.tokenizer)

    def _show_knobs(self, *_change) -> None:
        rule = POLICIES[self.policy.value]
        for knob, widget in self.knobs.items():
            widget.layout.display = "" if knob == rule.knob else "none"

    def settings(self) -> Sampling:
        """The ``Sampling`` the controls show: a policy's own knob counts only under that policy."""
        rule = POLICIES[self.policy.value]
        own = {rule.knob: float(self.knobs[rule.knob].value)} if rule.knob else {}
        return replace(self.base.with_policy(self.policy.value), steps=int(self.steps.value),
                       temperature=float(self.temperature.value), top_k=int(self.top_k.value),
                       top_p=float(self.top_p.value), **own)

    def generate(self, _button=None) -> None:
        self.status.value = "generating ..."
        try:
            candidates, rounds = int(self.candidates.value), int(self.corrections.value)
            if self.guide is not None and (candidates > 1 or rounds > 0):
                trace = generate_guided(self.model, self.guide, self.tokenizer, self.prompt.value, self.settings(),
                                        candidates=candidates, corrections=rounds, **self.canvas)
            else:
                trace = generate_diffusion(self.model, self.tokenizer, self.prompt.value, self.settings(), **self.canvas)
        except ValueError as err:  # bad settings: say so in the panel, keep the last run on screen
            self.status.value = f"<span style='color:#b00'>error: {err}</span>"
            return
        self.show(trace)

    def show(self, trace) -> None:
        self.trace, self.shown_tokenizer = trace, self.tokenizer  # a run keeps its own model's tokenizer
        # 0 first: the slider refuses a max below its value, and each change re-renders with the new trace
        self.slider.value = 0
        self.slider.max = self.play.max = trace.steps
        self.slider.value = trace.steps
        self.render()
        self.status.value = (f"{trace.new_tokens} tokens in {trace.described_steps()}, {trace.total_time:.2f} s "
                             f"({Sampling.of(trace.settings) if trace.kind == 'diffusion' else trace.kind})")

    def render(self, *_change) -> None:
        if self.trace is not None:
            self.view.value = viz.render_step(self.trace, self.slider.value, self.shown_tokenizer,
                                              color_by=COLOURINGS[self.colour.value])

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def generation_panel(model, tokenizer, **kwargs) -> GenerationPanel:
    return GenerationPanel(model, tokenizer, **kwargs)


class ClockPanel:
    """One wall-clock slider over several runs: each panel shows the step its run had reached by then."""

    def __init__(self, traces, tokenizers, labels=None, sample: int = 0, color_by: str = "step", ticks: int = 100):
        self.traces, self.tokenizers, self.labels = traces, tokenizers, labels
        self.sample, self.color_by = sample, color_by
        self.end = max(t.total_time for t in traces)
        self.clock = widgets.FloatSlider(value=self.end, min=0.0, max=self.end, step=self.end / ticks,
                                         description="wall clock (s)", readout_format=".3f",
                                         style={"description_width": "initial"}, layout=widgets.Layout(width="70%"))
        self.clock.add_class("rd-clock-slider")
        self.play = widgets.Play(value=ticks, min=0, max=ticks, interval=100, description="play")
        # Play counts ticks; the kernel turns a tick into seconds (jslink needs two traits of one type)
        self.play.observe(lambda change: setattr(self.clock, "value", self.end * change["new"] / ticks), names="value")
        self.view = _view(self.html())
        self.clock.observe(lambda _: setattr(self.view, "value", self.html()), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.play, self.clock]), self.view])

    def html(self) -> str:
        return viz.render_clock(self.traces, self.tokenizers, self.clock.value,
                                self.labels, self.sample, self.color_by)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def clock_panel(traces, tokenizers, labels=None, **kwargs) -> ClockPanel:
    return ClockPanel(traces, tokenizers, labels, **kwargs)

"""What the training progress bar says about speed: tokens per second, the share of the chip's peak the run uses
(MFU, 6 N FLOPs per token for N parameters), and the time left at the current rate."""

from __future__ import annotations

from pathlib import Path

import torch

# dense bf16 matrix peak by the vendors' data sheets (TFLOP/s); MFU is shown only for a chip named here
SPEC_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def spec_peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in SPEC_BF16_TFLOPS.items() if k in device_name), None)


def trained_on(run: Path) -> str:
    """The GPU run folder ``run`` trained on: the ``device.txt`` in it (``gpu_train.sh`` writes one where a run is
    shipped or summarised on another machine), else this machine's."""
    recorded = Path(run) / "device.txt"
    if recorded.exists():
        return recorded.read_text().split(",")[0].strip()
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def peak_flops(device) -> float | None:
    """The data-sheet bf16 peak (FLOP/s) of a CUDA ``device``; None on a CPU or an unknown chip."""
    if torch.device(device).type != "cuda":
        return None
    tflops = spec_peak_tflops(torch.cuda.get_device_name(device))
    return tflops * 1e12 if tflops else None


def progress_fields(tokens: int, seconds: float, parameters: int, steps_left: int, steps_done: int,
                    peak: float | None) -> dict:
    """``tokens`` trained in ``seconds`` over ``steps_done`` steps -> the bar's ``tok/s``, ``mfu`` and ``left``."""
    if seconds <= 0 or steps_done <= 0:
        return {}
    rate = tokens / seconds
    out = {"tok/s": f"{rate / 1e6:.2f}M" if rate >= 1e5 else f"{rate:.0f}"}
    if peak:
        out["mfu"] = f"{6 * parameters * rate / peak:.0%}"
    left = steps_left * seconds / steps_done
    out["left"] = f"{left / 60:.0f} min" if left >= 60 else f"{left:.0f} s"
    return out

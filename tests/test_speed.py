"""The training bar's speed fields: tokens/s, MFU against a known peak, time left at the current rate."""

from roberta_diffusion.speed import peak_flops, progress_fields


def test_progress_fields_from_tokens_time_and_steps():
    fields = progress_fields(tokens=2_000_000, seconds=1.0, parameters=17_000_000, steps_left=600, steps_done=30,
                             peak=989e12)
    assert fields["tok/s"] == "2.00M"
    assert fields["mfu"] == f"{6 * 17e6 * 2e6 / 989e12:.0%}"  # 21 %
    assert fields["left"] == "20 s"  # 600 steps at 30 per second
    slow = progress_fields(tokens=500, seconds=2.0, parameters=1, steps_left=7200, steps_done=2, peak=None)
    assert slow == {"tok/s": "250", "left": "120 min"}  # no MFU without a known peak


def test_nothing_to_say_before_the_first_step_and_no_peak_on_a_cpu():
    assert progress_fields(0, 0.0, 10, 5, 0, None) == {}
    assert peak_flops("cpu") is None


def test_one_table_of_data_sheet_peaks_for_the_bar_and_the_benchmarks():
    from roberta_diffusion.speed import spec_peak_tflops

    from benchmarks import common

    assert common.spec_peak_tflops is spec_peak_tflops
    assert spec_peak_tflops("NVIDIA H200") == 989.4 and spec_peak_tflops("Some Other GPU") is None

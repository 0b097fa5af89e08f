"""The text and fraction that the plug-in gives GIMP's progress bar."""

import sys
from pathlib import Path

import pytest

from daemon.wire.messages import JobProgress

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gimp_plugin"))

from progress_text import progress_status  # noqa: E402


def progress(stage: int, stages: int, iteration: int, total: int, side: int) -> JobProgress:
    return JobProgress("job", stage, stages, iteration, total, side, side, {"total": 1.0}, 0.5)


def test_the_bar_names_the_stage_its_size_and_the_iteration():
    text, fraction = progress_status(progress(2, 3, 150, 600, 256))
    assert text == "Neural Style: stage 2/3 at 256×256, iteration 150/600"
    assert fraction == 0.25


def test_with_several_layers_the_bar_names_the_layer_and_counts_the_whole_run():
    text, fraction = progress_status(progress(1, 2, 50, 100, 128), layer=2, layers=4)
    assert text == "Neural Style: layer 2/4 · stage 1/2 at 128×128, iteration 50/100"
    assert fraction == pytest.approx((1 + 0.5) / 4)


@pytest.mark.parametrize(("iteration", "total", "expected"), [(0, 10, 0.0), (10, 10, 1.0), (12, 10, 1.0), (3, 0, 0.0)])
def test_the_fraction_stays_between_0_and_1(iteration, total, expected):
    assert progress_status(progress(1, 1, iteration, total, 64))[1] == expected


def test_progress_rises_through_a_real_jobs_reports(engine):
    """The engine's own records, turned into wire records by the daemon's worker, give a rising bar that
    ends full."""
    from daemon.server.devices import progress_record
    from nst_engine import StyleSettings

    from .stand_ins import smooth_image

    reports = []
    engine.stylize(smooth_image(48, 48, 1), [smooth_image(48, 48, 2)], StyleSettings(size=48, scales=2, iterations=4),
                   on_progress=reports.append)
    statuses = [progress_status(JobProgress.from_wire(progress_record("job", report).to_wire())) for report in reports]
    fractions = [fraction for _, fraction in statuses]
    assert len(set(fractions)) == len(fractions) == 8 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert statuses[0][0] == "Neural Style: stage 1/2 at 24×24, iteration 1/8"
    assert statuses[-1][0] == "Neural Style: stage 2/2 at 48×48, iteration 8/8"

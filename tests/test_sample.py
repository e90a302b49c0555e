"""The bounded step sample: evenly spread over the whole run, never more than 2k records."""
from train.comm.measure.sample import EvenSample


def test_sample_stays_bounded_and_spans_the_run():
    sample = EvenSample(8, first_step=2)
    for step in range(100_000):
        if sample.wants(step):
            sample.add(step)
        assert len(sample.kept) <= 16
    kept = sample.sample()
    assert len(kept) == 8 and kept[0] == 2
    gaps = {b - a for a, b in zip(sample.kept, sample.kept[1:])}
    assert len(gaps) == 1 and sample.kept[-1] > 90_000  # one stride, reaching the end of the run


def test_short_runs_keep_every_step_after_the_first():
    sample = EvenSample(8, first_step=2)
    for step in range(6):
        if sample.wants(step):
            sample.add(step)
    assert sample.kept == [2, 3, 4, 5] and sample.sample() == [2, 3, 4, 5]
    assert not EvenSample(0, 0).wants(0)  # timeline_steps=0 keeps none

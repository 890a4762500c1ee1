import pytest

from copyhunt.scaling import CostModel, project

MODEL = CostModel(images=1000, pages=500, index_entries=10_000, crawl_per_page=0.01,
                  fingerprint_per_image=0.005, match_per_image=0.02, fixed_seconds=30.0)


def test_time_is_linear_in_images_and_divides_over_workers():
    one = MODEL.seconds(10_000, 10_000, 1) - MODEL.fixed_seconds
    assert MODEL.seconds(100_000, 10_000, 1) - MODEL.fixed_seconds == pytest.approx(10 * one)
    assert MODEL.seconds(10_000, 10_000, 4) - MODEL.fixed_seconds == pytest.approx(one / 4)


def test_search_grows_with_log_of_index_size():
    base = MODEL.seconds(1000, 10_000, 1)
    bigger = MODEL.seconds(1000, 100_000_000, 1)
    # log(1e8)/log(1e4) = 2: only the match term doubles.
    assert bigger - base == pytest.approx(1000 * 0.02)


def test_projection_flags_what_fits_in_a_day():
    rows = project(MODEL, [1_000, 100_000_000], [10_000], [2])
    assert [r["fits_in_a_day"] for r in rows] == [True, False]

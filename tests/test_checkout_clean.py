"""Runs last (conftest orders it): the tests before it left no file in the checkout, and
wrote nothing into the user's Hugging Face cache."""

from pathlib import Path

import pytest

from bild_align.testing.helpers import checkout_state


def test_the_tests_left_the_checkout_as_they_found_it(request):
    before = request.config.checkout_state
    after = checkout_state(Path(__file__).resolve().parents[1])
    if before is None or after is None:
        pytest.skip("not a git checkout")
    assert after - before == set(), "tests wrote into the checkout"


def test_the_tests_left_the_users_hugging_face_cache_alone(request):
    from conftest import cache_state

    before, folder = request.config.home_cache_state, request.config.home_cache
    assert cache_state(folder) - before == set(), f"tests wrote into {folder}"

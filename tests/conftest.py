"""Tests marked ``requires_lava`` (lava-nc's runtime) or ``requires_slayer`` (lava-dl's SLAYER)
skip where the ``lava`` extra is not installed (it installs on Python 3.10 only); every other
test runs on every Python (``make test-core PY=3.12``). ``make test`` sets SDM_NEURO_REQUIRE_LAVA=1:
there a missing extra stops the run instead of skipping, so no Lava test can be skipped unseen."""
import os

import pytest

from sdm_neuro.lava_extra import lava_dl_available, lava_nc_available


def pytest_collection_modifyitems(config, items):
    missing = {"requires_lava": None if lava_nc_available() else "lava-nc (the `lava` extra, Python 3.10) is not installed",
               "requires_slayer": None if lava_dl_available() else "lava-dl (the `lava` extra) is not installed"}
    if os.environ.get("SDM_NEURO_REQUIRE_LAVA") == "1":
        absent = [r for r in missing.values() if r]
        if absent:
            raise pytest.UsageError("SDM_NEURO_REQUIRE_LAVA=1 but " + "; ".join(absent))
    for item in items:
        for marker, reason in missing.items():
            if reason and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))

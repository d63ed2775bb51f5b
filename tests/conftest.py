"""Shared test settings."""
from pathlib import Path

import pytest
import torch

#: The real data samples, official architecture files and reference fixtures (../shared).
SHARED = Path(__file__).resolve().parents[2] / "shared"


def pytest_collection_modifyitems(config, items):
    # A checkout outside the workplace has no ../shared: skip what reads it, saying so, instead
    # of failing on a missing file. Where the folder exists (CI), these tests run.
    if SHARED.is_dir():
        return
    skip = pytest.mark.skip(reason=f"shared reference data not found at {SHARED}")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    # Tiny W8 tensors: more threads only add synchronisation (badly so on a busy machine).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

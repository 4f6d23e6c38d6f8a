"""Pipeline tests run tiny models: one torch thread is fastest, and many times faster when other
processes share the two cores."""

import pytest


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

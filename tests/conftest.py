import os

import pytest
import torch

# Tests see only the plugins they load themselves, whatever else is installed.
os.environ.setdefault("DNAS_PLUGINS", "")
torch.set_num_threads(2)


@pytest.fixture
def toy_registry():
    from dnas_core.plugins.registry import make_registry
    from tests.core import toy_plugin

    return make_registry([toy_plugin], entry_points=False)

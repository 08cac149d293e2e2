"""Shared test fixtures' building blocks (paths to the real shared data, tiny configs)."""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("PD_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))
PASCAL_EXAMPLES = os.path.join(SHARED, "pascal_part_examples")
ADE_SUBSET = os.path.join(SHARED, "ade20k_part_subset")
EFFNET_CFG = os.path.join(REPO, "configs", "proposal_generation", "effnet_lite0_cpu.yaml")

needs_shared = pytest.mark.skipif(not os.path.isdir(PASCAL_EXAMPLES),
                                  reason="../shared/data (real annotated images) not present")

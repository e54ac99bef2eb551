"""scripts/trajectory_penalties.py: the penalties of a saved adapter, against numpy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from nara.adapters import TrajectoryConfig, add_adapters, save_adapters
from nara.adapters.noise import find_hub
from nara.models import LLaDAModelLM, tiny_config

SCRIPT = Path(__file__).parents[2] / "scripts" / "trajectory_penalties.py"


def test_penalties_of_a_saved_adapter_match_numpy(tmp_path):
    spec = importlib.util.spec_from_file_location("trajectory_penalties", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    torch.manual_seed(0)
    config = TrajectoryConfig(rank_schedule=[3, 1], num_phases=2, target_modules=["0", "1"])
    model = add_adapters(LLaDAModelLM(tiny_config()), config)
    with torch.no_grad():
        for module in find_hub(model).trajectories[0].values():
            module.B.normal_()  # B is zero at init: give the nuclear norm something to measure
    save_adapters(model, tmp_path / "adapter")

    orth = nuc = frob = 0.0
    for module in find_hub(model).trajectories[0].values():
        a_all, b_all = module.A.detach().numpy(), module.B.detach().numpy()
        for start, stop in ((0, 3), (3, 4)):  # phase 0 has rank 3, phase 1 rank 1
            a, b = a_all[start:stop], b_all[:, start:stop]
            orth += np.square(a @ a.T - np.eye(stop - start)).sum()
            nuc += np.linalg.svd(b @ a, compute_uv=False).sum()
            frob += np.linalg.norm(b @ a)
    got = script.penalties(tmp_path / "adapter", LLaDAModelLM(tiny_config()))
    assert np.allclose(
        [got["orthogonality"], got["nuclear"], got["frobenius"]], [orth, nuc, frob], rtol=1e-4
    )

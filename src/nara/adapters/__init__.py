"""Noise-aware and static adapters for any PyTorch model: NaRA and its baselines.

model = nara.add_adapters(model, nara.NaRAConfig(r=32, eta=0.1))
with nara.noise_level(model, lam):  # lam: float or (batch,) in [0, 1]
    out = model(input_ids)
nara.save_adapters(model, "out/adapter")
"""

from nara.adapters import (  # noqa: F401  (register methods)
    bitfit,
    bottleneck,
    dora,
    foura,
    hira,
    ia3,
    lora,
    multilora,
    nara,
    prefix,
    tlora,
)
from nara.adapters.config import (
    AdapterConfig,
    BitFitConfig,
    BottleneckConfig,
    DoRAConfig,
    FouRAConfig,
    HiRAConfig,
    IA3Config,
    LoRAConfig,
    MultiLoRAConfig,
    NaRAConfig,
    NaRADoRAConfig,
    TLoRAConfig,
)
from nara.adapters.inject import (
    ParameterCount,
    adapter_layers,
    add_adapters,
    merge_adapters,
    resolve_targets,
    trainable_parameters,
    unmerge_adapters,
)
from nara.adapters.noise import noise_level
from nara.adapters.peft import load_peft_adapters
from nara.adapters.prefix import PrefixTuningConfig
from nara.adapters.prompt import PromptTuningConfig, PTuningConfig
from nara.adapters.save import load_adapters, save_adapters
from nara.adapters.trajectory import (
    TrajectoryConfig,
    TrajectoryRouterConfig,
    compose_trajectories,
    route_context,
    trajectory_regularizer,
)

__all__ = [
    "AdapterConfig",
    "BitFitConfig",
    "BottleneckConfig",
    "DoRAConfig",
    "FouRAConfig",
    "HiRAConfig",
    "IA3Config",
    "LoRAConfig",
    "MultiLoRAConfig",
    "NaRAConfig",
    "NaRADoRAConfig",
    "PTuningConfig",
    "ParameterCount",
    "PrefixTuningConfig",
    "PromptTuningConfig",
    "TLoRAConfig",
    "TrajectoryConfig",
    "TrajectoryRouterConfig",
    "adapter_layers",
    "add_adapters",
    "compose_trajectories",
    "load_adapters",
    "load_peft_adapters",
    "merge_adapters",
    "noise_level",
    "resolve_targets",
    "route_context",
    "save_adapters",
    "trainable_parameters",
    "trajectory_regularizer",
    "unmerge_adapters",
]

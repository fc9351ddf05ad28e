"""FSDP2 through accelerate on CPU processes (for the 2-process workers under tests/).

``accelerate launch --config_file configs/accelerate/fsdp.yaml`` puts the FSDP settings in the
environment (``ACCELERATE_USE_FSDP``, ``FSDP_VERSION``, ``FSDP_CPU_RAM_EFFICIENT_LOADING``, ...),
and on GPUs ``AcceleratorState`` turns them into ``DistributedType.FSDP``. Without an accelerator
it sets ``MULTI_CPU`` and ignores them (accelerate 1.15, state.py), although FSDP2 itself runs on
CPU tensors over gloo. :func:`enable` sets the state as it would be on GPUs, with the plugin built
from that same environment, before the updater creates its ``Accelerator`` (which then shares the
state); everything after that (``fsdp2_prepare_model``, the rank-0 broadcast of
``cpu_ram_efficient_loading``, ``no_sync``, ``clip_grad_norm_``, ``get_state_dict``) is
accelerate's and torch's own code.
"""

from __future__ import annotations

import os


def requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable():
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    from fgrpo_core.train.update import process_state

    process_state()  # the process group, with the updater's timeout
    state = Accelerator(cpu=True).state  # MULTI_CPU: the state drops the FSDP plugin here
    plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables accelerate launch set
    if plugin is None or plugin.fsdp_version != 2:
        raise RuntimeError(f"expected an FSDP2 plugin from the launch environment, got {plugin}")
    if state.distributed_type != DistributedType.MULTI_CPU or state.num_processes < 2:
        raise RuntimeError(f"expected MULTI_CPU with several processes, got {state.distributed_type} "
                           f"x {state.num_processes}")
    # Every later Accelerator (the updater's) copies PartialState's fields into the shared
    # AcceleratorState again, so the distributed type is set in both.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    return state

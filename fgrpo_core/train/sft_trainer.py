"""TRL's ``SFTTrainer`` with one change: where TRL's fused LM head has no Triton kernel (CPU), the
loss comes from the model's own full-logit cross-entropy.

TRL 1.x computes the SFT loss through a chunked "fused LM head" that never builds the
``[B, T, vocab]`` logits, and returns per-token entropy and top-1 hits for its metrics. On CUDA
this runs as a Triton kernel over the assistant tokens only, and at Qwen2.5-VL's 152K vocabulary
it saves gigabytes: we keep it there. On a CPU it runs as a Python loop over tiles of *every*
position, and on the tiny model it cost more than the rest of the step together (profiled in
``bench/sft.py``). The full-logit loss is the same quantity,

    loss = - sum_{t: label_t != -100} log softmax(logits_{t-1})[label_t] / num_items_in_batch,

computed by ``transformers.Trainer.compute_loss`` (the model's ``ForCausalLMLoss``, normalised
over the tokens of the whole accumulated batch, like TRL's). The logged token accuracy is then
read off the logits (argmax == label on loss positions); the entropy metric is not logged.
Overriding ``compute_loss`` in a subclass is the extension point TRL documents for this.

A second override fixes resuming (transformers#43701, open; ms-swift#7947 saw the loss restart
from its initial value): ``save_pretrained`` writes Qwen2.5-VL checkpoints in the hub's key layout
(``visual.*``, ``model.layers.*``), but ``Trainer`` reloads a checkpoint's weights with
``load_state_dict(strict=False)`` and no key conversion, so *nothing* loads: only a warning is
printed, and the "resumed" run continues from the base weights with the resumed optimiser. Here
the checkpoint is read by ``from_pretrained`` (which converts the keys) and copied strictly.
"""

from __future__ import annotations

import torch
from transformers import Trainer
from trl import SFTTrainer

from fgrpo_core.train.sft_data import IGNORE_INDEX


class FGRPOSFTTrainer(SFTTrainer):
    """``SFTTrainer``; ``fused_lm_head=False`` takes the full-logit loss (see the module doc)."""

    def __init__(self, *args, fused_lm_head: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused_lm_head = fused_lm_head

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        target = self.model if model is None else model
        from peft import PeftModel

        if isinstance(target, PeftModel) or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            # adapters, FSDP and DeepSpeed states are saved and loaded with the model's own names
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        dtype = next(target.parameters()).dtype
        saved = type(target).from_pretrained(resume_from_checkpoint, dtype=dtype, use_safetensors=True)
        target.load_state_dict(saved.state_dict(), strict=True)  # a missing weight is an error here

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.fused_lm_head:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = {**inputs, "use_cache": False}  # no KV cache in a training forward
        loss, outputs = Trainer.compute_loss(
            self, model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        with torch.no_grad():
            labels = inputs["labels"][:, 1:]  # [B, T-1] targets of positions 0..T-2
            mask = labels != IGNORE_INDEX
            hits = (outputs.logits[:, :-1].argmax(-1) == labels) & mask
            n_hits = self.accelerator.gather_for_metrics(hits.sum()).sum()
            n_valid = self.accelerator.gather_for_metrics(mask.sum()).sum()
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["mean_token_accuracy"].append((n_hits / n_valid.clamp(min=1)).item())
        return (loss, outputs) if return_outputs else loss

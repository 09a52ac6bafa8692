"""Every custom socket type of the pack, declared once, and the pack-wide schema constants."""

from __future__ import annotations

from comfy_api.latest import io

CATEGORY = "audio/stable audio 3"

# An SA3Handle (nodes/_handle.py): the loaded modules plus the LoRA stack requested for them.
SA3Model = io.Custom("SA3_MODEL")
# An SA3Conditioning (nodes/_handle.py): encoded prompts + seconds for each batch item.
SA3Conditioning = io.Custom("SA3_CONDITIONING")
# An inpaint keep-mask over the latent frames of one plan, plus the regions it was built from.
SA3InpaintMask = io.Custom("SA3_INPAINT_MASK")
# A tuple of sa3.training_data.TrainingClip: checked clips + captions of one training folder.
SA3TrainingData = io.Custom("SA3_TRAINING_DATA")

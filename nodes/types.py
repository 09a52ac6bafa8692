"""Every custom socket type of the pack, declared once, and the pack-wide schema constants.

The type strings are what saved workflows and links carry; ComfyUI compares them when a link
is made and when a prompt is validated (against the node definitions, not the saved file).
"""

from __future__ import annotations

from comfy_api.latest import io

CATEGORY = "audio/stable audio 3"

# An SA3Handle (nodes/_handle.py): the loaded modules plus the LoRA stack requested for them.
SA3Model = io.Custom("SA3_MODEL")
# A ConditioningSide (nodes/_handle.py): encoded prompts + seconds for each batch item.
SA3Conditioning = io.Custom("SA3_CONDITIONING")
# An InpaintRegions (nodes/_adapters.py): what to regenerate, in seconds (regions or a
# continuation point); the sampler turns it into the latent keep-mask once the plan is known.
SA3InpaintRegions = io.Custom("SA3_INPAINT_REGIONS")
# A SamplingOptions (nodes/sampling_options.py): the official app's advanced sampling controls.
SA3Options = io.Custom("SA3_SAMPLING_OPTIONS")
# A tuple of sa3.training_data.TrainingClip: checked clips + captions of one training folder.
SA3TrainingData = io.Custom("SA3_TRAINING_DATA")

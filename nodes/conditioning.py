"""Text encode node: prompts, negative prompts and durations -> positive / negative conditioning.

Batches: with ``one_prompt_per_line`` every non-empty line of ``prompt`` is one batch item; the
negative prompt then has one line (used for every item) or one line per item. ``durations``
(seconds, comma-separated) gives one duration per item, or leave it empty to use ``duration``
for all. A single prompt used with a larger SA3 Empty Latent batch is repeated by the sampler,
as ``generate(batch_size=...)`` does.
"""

from __future__ import annotations

from comfy_api.latest import io

from . import comfy_models
from ._adapters import check_durations, error, one_or_each, parse_durations, split_prompts
from ._handle import SA3Conditioning, sync_loras
from ._sa3 import pipeline
from .loaders import _require_model
from .types import CATEGORY, SA3Model
from .types import SA3Conditioning as SA3ConditioningType

NODE = "Text Encode"
MAX_SECONDS = 384.0  # the seconds conditioner's range; each model's own maximum is checked on run


def text_batch(prompt: str, negative_prompt: str, one_per_line: bool, duration: float, durations: str):
    """(prompts, negatives or None, durations) from the widgets, or ValueError naming the input."""
    prompts = split_prompts(prompt, one_per_line)
    n = len(prompts)
    if n == 0:
        raise ValueError(error(NODE, "prompt has no non-empty line (got an empty prompt list, expected at least one "
                                     "prompt). Type a prompt, one per line."))
    negatives = None
    if negative_prompt.strip():
        negatives = split_prompts(negative_prompt, one_per_line)
        negatives = one_or_each(negatives, n, error(
            NODE, f"negative_prompt has {len(negatives)} lines but prompt has {n} (expected 1 or {n}). Give one "
                  "negative line for all items or one per prompt."))
    seconds = parse_durations(durations, NODE, "durations") or [float(duration)]
    seconds = one_or_each(seconds, n, error(
        NODE, f"durations has {len(seconds)} values but prompt has {n} item(s) (expected 1 or {n}). Give one "
              "duration per prompt line."))
    check_durations(seconds, MAX_SECONDS, NODE, "duration")
    return prompts, negatives, seconds


def encode(handle, prompts, negatives, durations) -> tuple[SA3Conditioning, SA3Conditioning]:
    """Encode like ``generate()`` (one ``encode_text`` call) and split into the two sides."""
    sync_loras(handle)  # conditioner LoRAs change the seconds embedding
    comfy_models.load_parts(handle, "text")
    model = handle.model
    text = pipeline.encode_text(model.text_encoder, model.conditioner, prompts, durations, negatives)
    comfy_models.release_parts(handle, "text")
    out = comfy_models.intermediate_device()
    family = handle.config.family
    positive = SA3Conditioning("positive", tuple(prompts), tuple(durations), text.cross.to(out),
                               text.global_cond.to(out), None, family,
                               partner_prompts=tuple(negatives) if negatives is not None else None)
    if negatives is None:
        negative = SA3Conditioning("none", tuple(prompts), tuple(durations), None, None, None, family)
    else:
        negative = SA3Conditioning("negative", tuple(negatives), tuple(durations), text.negative_cross.to(out),
                                   None, text.negative_mask.to(out), family, partner_prompts=tuple(prompts))
    return positive, negative


class SA3TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3TextEncode",
            display_name="SA3 Text Encode",
            category=CATEGORY,
            description="Encodes the prompt, the negative prompt and the duration with T5Gemma and the SA3 "
                        "conditioner. Turn on one_prompt_per_line to make a batch: one item per line.",
            inputs=[
                SA3Model.Input("model", tooltip="The SA3 model (its LoRAs on the conditioner apply here)."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="What to generate, e.g. 'Lo-fi hip hop beat, 90 BPM, warm piano'. With "
                                        "one_prompt_per_line, each non-empty line is one batch item."),
                io.String.Input("negative_prompt", multiline=True, default="",
                                tooltip="What to avoid (used when cfg > 1). Empty: no negative prompt. With "
                                        "one_prompt_per_line: one line for all items or one line per item."),
                io.Float.Input("duration", default=30.0, min=0.1, max=MAX_SECONDS, step=0.1,
                               tooltip="Length in seconds of every item (small models: up to 120 s, medium: up to "
                                       "380 s). Must equal the SA3 Empty Latent duration."),
                io.Boolean.Input("one_prompt_per_line", default=False,
                                 tooltip="Off: the whole text is one prompt. On: each non-empty line is the prompt "
                                         "of one batch item."),
                io.String.Input("durations", default="",
                                tooltip="Optional per-item seconds, comma-separated (e.g. '10, 20, 15'), one per "
                                        "prompt line; overrides duration. Empty: duration for every item."),
            ],
            outputs=[
                SA3ConditioningType.Output("positive", display_name="positive",
                                           tooltip="Prompt + duration conditioning for SA3 Sampler's positive input."),
                SA3ConditioningType.Output("negative", display_name="negative",
                                           tooltip="Negative prompt conditioning for SA3 Sampler's negative input "
                                                   "(zeros when the negative prompt is empty)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, prompt=None, negative_prompt=None, one_prompt_per_line=None, durations=None):
        if prompt is None or negative_prompt is None or durations is None:
            return True  # linked: checked again when the node runs
        try:
            text_batch(prompt, negative_prompt, bool(one_prompt_per_line), 1.0, durations)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, model, prompt, negative_prompt, duration, one_prompt_per_line, durations) -> io.NodeOutput:
        handle = _require_model(model, NODE)
        prompts, negatives, seconds = text_batch(prompt, negative_prompt, one_prompt_per_line, duration, durations)
        check_durations(seconds, handle.config.max_duration, NODE, "duration")
        positive, negative = encode(handle, prompts, negatives, seconds)
        return io.NodeOutput(positive, negative)

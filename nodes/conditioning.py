"""Text encode node: prompts, negative prompts and durations -> positive / negative conditioning.

This node is where a graph sets its durations: they condition ``seconds_total`` and the sampler
sizes the latent from them (the official ``generate()`` sizing), so no other node asks for them.

Batches: with ``one_prompt_per_line`` every non-empty line of ``prompt`` is one batch item;
``batch_size`` N > 1 makes N items (one prompt, or exactly N lines), as
``generate(batch_size=N)`` does. The negative prompt then has one line (used for every item) or
one line per item; ``durations`` (seconds, comma-separated) one value or one per item; leave it
empty to use ``duration`` for all.
"""

from __future__ import annotations

from comfy_api.latest import io

from . import comfy_models
from ._adapters import error, one_or_each, parse_durations, split_prompts
from ._handle import ConditioningSide
from ._sa3 import MODEL_SAMPLE_SIZES, SAMPLE_RATE, checks, stages
from ._validate import checked
from .loaders import _require_model
from .search import schema_aliases
from .types import CATEGORY, SA3Conditioning, SA3Model

NODE = "Text Encode"
# The longest official model's maximum (medium: 16,777,216 samples at 44.1 kHz, 380.43 s), rounded
# down to the widgets' 0.1 s step; each model's own maximum (small: 120 s) is checked before
# encoding, and the web extension lowers the widget to it.
MAX_SECONDS = checks.floor_to(max(MODEL_SAMPLE_SIZES.values()) / SAMPLE_RATE, 1)
MAX_BATCH = checks.MAX_BATCH


def text_batch(prompt: str, negative_prompt: str, one_per_line: bool, duration: float, durations: str,
               batch_size: int = 1):
    """(prompts, negatives or None, durations), one per batch item, from the widgets, or
    ValueError naming the input."""
    prompts = split_prompts(prompt, one_per_line)
    if not prompts:
        raise ValueError(error(NODE, "prompt has no non-empty line (got an empty prompt list, expected at least one "
                                     "prompt). Type a prompt, one per line."))
    n = batch_size if batch_size > 1 else len(prompts)
    prompts = one_or_each(prompts, n, error(
        NODE, f"prompt has {len(prompts)} lines but batch_size is {batch_size} (expected 1 or {batch_size}). Give "
              "one prompt, one line per item, or set batch_size to 1."))
    negatives = None
    if negative_prompt.strip():
        negatives = split_prompts(negative_prompt, one_per_line)
        negatives = one_or_each(negatives, n, error(
            NODE, f"negative_prompt has {len(negatives)} lines but the batch has {n} items (expected 1 or {n}). "
                  "Give one negative line for all items or one per prompt."))
    seconds = parse_durations(durations, NODE, "durations") or [float(duration)]
    seconds = one_or_each(seconds, n, error(
        NODE, f"durations has {len(seconds)} values but the batch has {n} item(s) (expected 1 or {n}). Give one "
              "duration for all items or one per item."))
    checks.check_number("prompt lines", n, 1, checks.MAX_BATCH, integer=True, where=NODE,
                        fix="Split the batch over several graphs.")
    for text in prompts + (negatives or []):
        checks.check_text("prompt", text, NODE)
    return prompts, negatives, checks.check_durations("durations" if durations.strip() else "duration", seconds,
                                                      MAX_SECONDS, NODE)


def encode(handle, prompts, negatives, durations) -> tuple[ConditioningSide, ConditioningSide]:
    """Encode like ``generate()`` (one ``encode_text`` call) and split into the two sides."""
    comfy_models.load_parts(handle, "text")  # with the branch's LoRAs: they change the seconds embedding
    model = handle.model
    text = stages.encode_text(model.text_encoder, model.conditioner, prompts, durations, negatives)
    comfy_models.release_parts(handle, "text")
    out = comfy_models.intermediate_device()
    prompts, durations = tuple(prompts), tuple(durations)
    positive = ConditioningSide("positive", prompts, durations, text.cross.to(out), text.global_cond.to(out), None)
    if negatives is None:
        negative = ConditioningSide("none", prompts, durations, None, None, None)
    else:
        negative = ConditioningSide("negative", tuple(negatives), durations, text.negative_cross.to(out), None,
                                    text.negative_mask.to(out))
    return positive, negative


class SA3TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3TextEncode",
            **schema_aliases("SA3TextEncode"),
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
                                       "380.4 s); the sampler sizes the latent from it."),
                io.Boolean.Input("one_prompt_per_line", default=False,
                                 tooltip="Off: the whole text is one prompt. On: each non-empty line is the prompt "
                                         "of one batch item."),
                io.String.Input("durations", default="",
                                tooltip="Optional per-item seconds, comma-separated (e.g. '10, 20, 15'), one per "
                                        "prompt line; overrides duration. Empty: duration for every item."),
                io.Int.Input("batch_size", default=1, min=1, max=MAX_BATCH, optional=True,
                             tooltip="How many clips to generate. 1: one per prompt line. N: N clips of one prompt "
                                     "(or of N lines), as generate(batch_size=N)."),
            ],
            outputs=[
                SA3Conditioning.Output("positive", display_name="positive",
                                       tooltip="Prompt + duration conditioning for SA3 Sampler's positive input "
                                               "(it also sizes the latent)."),
                SA3Conditioning.Output("negative", display_name="negative",
                                       tooltip="Negative prompt conditioning for SA3 Sampler's negative input "
                                               "(zeros when the negative prompt is empty)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, prompt=None):
        # one input only: ComfyUI labels the message with every input named here (nodes/_validate.py);
        # ComfyUI range-checks duration and batch_size per input, and execute checks every widget again
        # (NaN, line counts, durations text) first thing, before anything is encoded
        if prompt is not None and not prompt.strip():
            return error(NODE, "prompt is empty (got no text, expected at least one prompt). Type a prompt.")
        return True

    @classmethod
    @checked(NODE)
    def execute(cls, model, prompt, negative_prompt, duration, one_prompt_per_line, durations,
                batch_size=1) -> io.NodeOutput:
        handle = _require_model(model, NODE)
        prompts, negatives, seconds = text_batch(prompt, negative_prompt, one_prompt_per_line, duration, durations,
                                                 batch_size)
        checks.check_durations("durations" if durations.strip() else "duration", seconds,  # before any encoding
                               handle.config.max_duration, NODE)
        positive, negative = encode(handle, prompts, negatives, seconds)
        return io.NodeOutput(positive, negative)

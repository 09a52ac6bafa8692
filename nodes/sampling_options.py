"""SA3 Sampling Options: the official app's advanced sampling controls, for SA3 Sampler's
optional ``options`` input (a graph without it samples exactly as before).

CFG interval, CFG rescale, CFG norm threshold, the schedule shift and the duration padding, with
the official defaults; ``sa3.sampling.check_sampling`` checks them (the one validator ``generate()``
uses), and the schedule shift's text is read by ``sa3.config.parse_shift_text`` (the CLI's
``--dist-shift`` reads the same words).
"""

from __future__ import annotations

from dataclasses import dataclass

from comfy_api.latest import io

from ._adapters import error
from ._sa3 import DURATION_PADDING_SEC, check_controls, checks, parse_shift_text
from ._validate import checked
from .search import schema_aliases
from .types import CATEGORY, SA3Options

NODE = "Sampling Options"


@dataclass(frozen=True)
class SamplingOptions:
    """Checked controls, as ``stages.sample`` and ``plan_latents`` take them."""

    cfg_interval: tuple[float, float] = (0.0, 1.0)
    scale_phi: float = 0.0
    cfg_norm_threshold: float = 0.0
    dist_shift: dict | None = None  # None: the model's own schedule shift
    duration_padding_sec: float = DURATION_PADDING_SEC

    def sample_kwargs(self) -> dict:
        """The keyword arguments of ``stages.sample``."""
        return dict(cfg_interval=self.cfg_interval, scale_phi=self.scale_phi,
                    cfg_norm_threshold=self.cfg_norm_threshold, dist_shift=self.dist_shift)


DEFAULTS = SamplingOptions()


def read_options(value, node: str) -> SamplingOptions:
    """The ``options`` input of a node: unconnected -> the official defaults."""
    if value is None:
        return DEFAULTS
    if not isinstance(value, SamplingOptions):
        raise ValueError(error(node, f"options is not SA3 sampling options (got {type(value).__name__}). Connect "
                                     "SA3 Sampling Options."))
    return value


class SA3SamplingOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3SamplingOptions",
            **schema_aliases("SA3SamplingOptions"),
            display_name="SA3 Sampling Options",
            category=CATEGORY,
            description="Advanced sampling controls of the official Stable Audio 3 app for SA3 Sampler's options "
                        "input: CFG interval, CFG rescale, CFG norm threshold, schedule shift and duration padding. "
                        "The defaults are the official ones: connecting this node unchanged changes nothing.",
            inputs=[
                io.Float.Input("cfg_interval_min", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="CFG interval start (used when cfg > 1): guidance runs only in the steps "
                                       "whose noise level is between min and max (1 = pure noise, 0 = clean); "
                                       "the other steps run the prompt alone at half the cost. Official default "
                                       "0-1: every step."),
                io.Float.Input("cfg_interval_max", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="CFG interval end (see cfg_interval_min). E.g. 0.2-0.8 leaves the first and "
                                       "the last steps unguided."),
                io.Float.Input("cfg_rescale", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="CFG rescale (official scale_phi, used when cfg > 1): pulls the guided "
                                       "prediction's spread back towards the unguided one's, against harshness "
                                       "at high cfg. 0 = off (official default)."),
                io.Float.Input("cfg_norm_threshold", default=0.0, min=0.0, max=checks.MAX_CFG_NORM_THRESHOLD,
                               step=0.1,
                               tooltip="CFG norm threshold (used when cfg > 1): caps the size of the guidance "
                                       "correction at this norm per clip. 0 = off (official default)."),
                io.String.Input("schedule_shift", default="default",
                                tooltip="Sampling schedule shift (official dist_shift). 'default': the model's "
                                        "own (LogSNR). Or a type with optional parameters (lengths in latent "
                                        "frames, about 10.8 per second): 'none' (linear); 'flux min_length=256 "
                                        "max_length=4096 alpha_min=1 alpha_max=1' (alpha > 1 spends more steps at "
                                        "high noise); 'full base_shift=0.5 max_shift=1.15 min_length=256 "
                                        "max_length=4096'; 'logsnr anchor_length=2000 anchor_logsnr=-6.2 rate=1 "
                                        "logsnr_end=2'. Parameters left out take those defaults."),
                io.Float.Input("duration_padding", default=DURATION_PADDING_SEC, min=0.0, max=checks.MAX_SECONDS,
                               step=0.5,
                               tooltip="Seconds of headroom generated after the longest duration (official "
                                       "duration_padding_sec, default 6); SA3 Decode trims it away. Changes the "
                                       "result."),
            ],
            outputs=[SA3Options.Output(display_name="options",
                                                tooltip="For SA3 Sampler's options input.")],
        )

    @classmethod
    def validate_inputs(cls, schedule_shift=None) -> bool | str:
        if schedule_shift is None:
            return True
        try:
            parse_shift_text(schedule_shift, "schedule_shift", NODE)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    @checked(NODE)
    def execute(cls, cfg_interval_min, cfg_interval_max, cfg_rescale, cfg_norm_threshold, schedule_shift,
                duration_padding) -> io.NodeOutput:
        shift = parse_shift_text(schedule_shift, "schedule_shift", NODE)
        controls = check_controls(cfg_rescale, cfg_norm_threshold, (cfg_interval_min, cfg_interval_max),
                                           shift, NODE)
        return io.NodeOutput(SamplingOptions(
            cfg_interval=controls["cfg_interval"], scale_phi=controls["scale_phi"],
            cfg_norm_threshold=controls["cfg_norm_threshold"], dist_shift=shift, duration_padding_sec=duration_padding))

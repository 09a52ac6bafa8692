"""Bad input fails at validation or at the first line of execute, with a message that names the
input and follows "Stable Audio 3 <node>: <what> (got X, expected Y). <fix>."."""

from __future__ import annotations

import json

import pytest
import torch

from tests.nodes.conftest import folder_paths, load_handle, nodes

SMALL = "tiny-small"


def _encode(h, **kw):
    args = dict(model=h, prompt="a dog", negative_prompt="", duration=2.0, one_prompt_per_line=False, durations="")
    args.update(kw)
    return nodes.SA3TextEncode.execute(**args).args


def _latent(h, **kw):
    args = dict(model=h, duration=2.0, batch_size=1, durations="")
    args.update(kw)
    return nodes.SA3EmptyLatent.execute(**args).args[0]


def _sample(h, pos, latent=None, **kw):
    args = dict(model=h, positive=pos, seed=0, steps=2, cfg=1.0, sampler="default for the model", apg_scale=1.0)
    if latent is not None:
        args["latent"] = latent
    args.update(kw)
    return nodes.SA3Sampler.execute(**args).args[0]


# --- text encode ------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt=" \n\n", one_prompt_per_line=True),
     "Stable Audio 3 Text Encode: prompt has no non-empty line (got an empty prompt list, expected at least one "
     "prompt)."),
    (dict(prompt="a\nb\nc", negative_prompt="x\ny", one_prompt_per_line=True),
     "Stable Audio 3 Text Encode: negative_prompt has 2 lines but the batch has 3 items (expected 1 or 3)."),
    (dict(prompt="a\nb", durations="1, 2, 3", one_prompt_per_line=True),
     "Stable Audio 3 Text Encode: durations has 3 values but the batch has 2 item(s) (expected 1 or 2)."),
    (dict(prompt="a\nb\nc", one_prompt_per_line=True, batch_size=2),
     "Stable Audio 3 Text Encode: prompt has 3 lines but batch_size is 2 (expected 1 or 2)."),
    (dict(durations="2, 3", batch_size=3),
     "Stable Audio 3 Text Encode: durations has 2 values but the batch has 3 item(s) (expected 1 or 3)."),
    (dict(durations="400"),
     "Stable Audio 3 Text Encode: durations must be a number above 0 and at most 380.4 seconds (got 400)."),
    (dict(batch_size=65),
     "Stable Audio 3 Text Encode: batch_size must be an integer from 1 to 64 (got 65)."),
    (dict(durations="10, ten"),
     "Stable Audio 3 Text Encode: durations must be numbers of seconds separated by commas (got 'ten' in "
     "'10, ten', expected e.g. '10, 20, 5.5')."),
])
def test_text_encode_validation(kwargs, message):
    """Checked first thing in execute (validate_inputs takes the prompt only: one input, one label)."""
    with pytest.raises(ValueError) as e:
        _encode(load_handle(SMALL), **kwargs)
    assert str(e.value).startswith(message), str(e.value)


def test_text_encode_queue_time_prompt_check():
    assert nodes.SA3TextEncode.validate_inputs(prompt=" \n ") == (
        "Stable Audio 3 Text Encode: prompt is empty (got no text, expected at least one prompt). Type a prompt.")
    assert nodes.SA3TextEncode.validate_inputs(prompt="a dog") is True


def test_text_encode_duration_over_model_maximum():
    with pytest.raises(ValueError) as e:
        _encode(load_handle(SMALL), duration=200.0)
    assert str(e.value) == ("Stable Audio 3 Text Encode: duration must be a number above 0 and at most 120 seconds "
                            "(got 200).")


def test_linked_inputs_pass_validation():
    assert nodes.SA3TextEncode.validate_inputs(prompt=None) is True
    assert nodes.SA3EmptyLatent.validate_inputs(durations=None) is True
    assert nodes.SA3InpaintMask.validate_inputs(regions=None) is True


def test_text_encode_makes_the_batch():
    h = load_handle(SMALL)
    pos, neg = _encode(h, prompt="a dog", batch_size=3, durations="1, 2, 3")
    assert pos.prompts == ("a dog",) * 3 and pos.durations == (1.0, 2.0, 3.0) and pos.cross.shape[0] == 3
    assert neg.kind == "none" and neg.durations == pos.durations
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Text Encode: duration must be a number from 0.1 to 380.4 "
                                         r"\(got 0\)"):
        _encode(h, duration=0.0)  # a linked duration is checked when the node runs


# --- empty latent / inpaint mask ---------------------------------------------------------------


def test_empty_latent_matches_generate_sizes():
    h = load_handle(SMALL)
    latent = _latent(h, duration=3.0, batch_size=2)
    assert set(latent) == {"samples", "type", "sa3_durations"}
    assert latent["type"] == "audio" and latent["sa3_durations"] == [3.0, 3.0]
    assert latent["samples"].shape == (2, h.config.latent_channels, 98)  # ceil((3 + 6) s * 44100 / 8192) * 2
    assert not latent["samples"].any()
    with pytest.raises(ValueError, match="durations has 3 values but batch_size is 2"):
        _latent(h, batch_size=2, durations="1, 2, 3")
    assert nodes.SA3EmptyLatent.define_schema().is_deprecated  # hidden from the node search, still runs
    with pytest.raises(ValueError, match=r"duration must be a number above 0 and at most 120 seconds \(got 130\)"):
        _latent(h, duration=130.0)


@pytest.mark.parametrize("regions, message", [
    ("", "regions is empty (got no region, expected at least one 'start-end'). Add a region such as '2-4'."),
    ("3-1", "regions region 3-1 s must end after it starts (got start 3, end 1)."),
    ("2-2", "regions region 2-2 s must end after it starts"),
    ("1 to x", "regions entry '1 to x' is not a region (got '1 to x', expected 'start-end' in seconds"),
    ("1e999-2e999", "regions start must be a number at least 0 seconds (got inf)."),
])
def test_inpaint_regions_errors(regions, message):
    with pytest.raises(ValueError) as e:
        nodes.SA3InpaintMask.execute(mode="regions", regions=regions, keep_seconds=0.0)
    assert str(e.value).startswith("Stable Audio 3 Inpaint Regions: " + message), str(e.value)
    if regions:
        assert nodes.SA3InpaintMask.validate_inputs(regions=regions).startswith(
            "Stable Audio 3 Inpaint Regions: " + message)


def test_inpaint_regions_outside_the_duration():
    """Known once the duration is: checked by the sampler (before any encoding), or by the node
    itself when an old graph connects an SA3 Empty Latent."""
    h = load_handle(SMALL)
    pos, _ = _encode(h, duration=4.0)
    (mask,) = nodes.SA3InpaintMask.execute(mode="regions", regions="1-2, 5-6", keep_seconds=0.0).args
    source = {"samples": torch.zeros(1, h.config.latent_channels, 98) + 0.5, "type": "audio"}
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Sampler: inpaint_mask region 5-6 s must start before the "
                                         r"4 s duration \(got start 5\)"):
        _sample(h, pos, inpaint_mask=mask, inpaint_source=source)
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Inpaint Regions: regions region 5-6 s must start before "
                                         r"the 4 s duration \(got start 5\)"):
        nodes.SA3InpaintMask.execute(mode="regions", regions="1-2, 5-6", keep_seconds=0.0,
                                     latent=_latent(h, duration=4.0))
    (keep,) = nodes.SA3InpaintMask.execute(mode="continuation", regions="", keep_seconds=4.0).args
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Sampler: inpaint_mask keeps 4 s of the source, which "
                                         r"leaves nothing to generate \(got keep_seconds 4, expected < the 4 s "
                                         r"duration\)"):
        _sample(h, pos, inpaint_mask=keep, inpaint_source=source)
    with pytest.raises(ValueError, match=r"keep_seconds 4 leaves nothing to generate \(got 4 s, expected < the 4 s"):
        nodes.SA3InpaintMask.execute(mode="continuation", regions="", keep_seconds=4.0,
                                     latent=_latent(h, duration=4.0))


def test_inpaint_mask_unknown_mode():
    with pytest.raises(ValueError) as e:
        nodes.SA3InpaintMask.execute(mode="everything", regions="1-2", keep_seconds=0.0)
    assert str(e.value) == ("Stable Audio 3 Inpaint Regions: mode must be one of 'regions', 'continuation' (got "
                            "'everything'). Pick a value from the list.")
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Inpaint Regions: keep_seconds must be a number from 0 to "
                                         r"380.4 \(got -1\)"):
        nodes.SA3InpaintMask.execute(mode="continuation", regions="", keep_seconds=-1.0)


def test_inpaint_mask_regions_and_continuation():
    (mask,) = nodes.SA3InpaintMask.execute(mode="regions", regions="0.5-1\n2 - 3.5; 3.8..9", keep_seconds=0.0).args
    assert mask.spans(4.0) == [(0.5, 1.0), (2.0, 3.5), (3.8, 9.0)]
    (mask,) = nodes.SA3InpaintMask.execute(mode="continuation", regions="", keep_seconds=1.5).args
    assert mask.spans(4.0) == [(1.5, 4.0)] and mask.spans(6.0) == [(1.5, 6.0)]  # up to the generation's duration


# --- sampler -----------------------------------------------------------------------------------


def test_sampler_input_errors():
    h = load_handle(SMALL)
    pos, _neg = _encode(h, duration=2.0)
    latent = _latent(h, duration=3.0)
    with pytest.raises(ValueError, match=r"the positive conditioning was encoded for \[2.0\] s but the latent is "
                                         r"planned for \[3.0\] s \(expected the same\). Leave latent unconnected"):
        _sample(h, pos, latent)
    pos3, _ = _encode(h, prompt="a\nb\nc", one_prompt_per_line=True, duration=3.0)
    with pytest.raises(ValueError, match=r"positive has 3 items but the latent has 2 \(expected 1 or 2\)"):
        _sample(h, pos3, _latent(h, duration=3.0, batch_size=2))
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Sampler: inpaint_mask is connected but no inpaint source is "
                                         r"\(expected inpaint_audio or inpaint_source too\). Connect the source audio "
                                         r"to inpaint_audio.$"):
        _sample(h, pos, inpaint_mask=nodes.SA3InpaintMask.execute(mode="regions", regions="0.5-1",
                                                                   keep_seconds=0.0).args[0])
    audio = {"waveform": torch.zeros(1, 2, 44100), "sample_rate": 44100}
    (encoded,) = nodes.SA3EncodeAudio.execute(model=h, audio=audio).args
    for latent_name, audio_name in (("init_latent", "init_audio"), ("inpaint_source", "inpaint_audio")):
        with pytest.raises(ValueError, match=rf"^Stable Audio 3 Sampler: both {latent_name} and {audio_name} are "
                                             r"connected \(expected one (init|inpaint) source\). Disconnect one of "
                                             r"them.$"):
            _sample(h, pos, **{latent_name: encoded, audio_name: audio})
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Sampler: init_audio is not AUDIO \(got str"):
        _sample(h, pos, init_audio="song.wav")
    with pytest.raises(ValueError, match=r"model is not an SA3 model \(got str"):
        _sample("not a model", pos, latent)
    with pytest.raises(ValueError, match="negative is not negative/none SA3 conditioning"):
        _sample(h, pos, negative=pos)
    with pytest.raises(ValueError, match=r"inpaint_mask is not SA3 inpaint regions \(got dict"):
        _sample(h, pos, inpaint_mask={"regions": [(0.5, 1.0)]}, inpaint_source=latent)


def test_encode_audio_rejects_non_audio():
    with pytest.raises(ValueError, match=r"Stable Audio 3 Encode Audio: audio waveform has shape \(1, 3, 10\)"):
        nodes.SA3EncodeAudio.execute(model=load_handle(SMALL), audio={"waveform": torch.zeros(1, 3, 10),
                                                                      "sample_rate": 44100})


# --- loaders -----------------------------------------------------------------------------------


def test_loader_names_missing_and_foreign_models(tmp_path):
    if nodes.SA3ModelLoader.validate_inputs(model_name="medium-base") is True:  # download is read when it runs
        with pytest.raises(ValueError) as e:
            nodes.SA3ModelLoader.execute(model_name="medium-base", precision="auto", attention="auto",
                                         padding_mode="exact", download=False)
        message = str(e.value)
        if "is not downloaded" in message:  # (unless someone has the real model installed)
            assert message.startswith("Stable Audio 3 Model Loader: model_name 'medium-base' is not downloaded")
            assert "stabilityai/stable-audio-3-medium-base" in message and "turn on download" in message
    assert nodes.SA3ModelLoader.validate_inputs(model_name="no-such-model").startswith(
        "Stable Audio 3 Model Loader: model_name 'no-such-model' is not a model folder")
    foreign = tmp_path / "other-model"
    foreign.mkdir()
    (foreign / "model_config.json").write_text(json.dumps({"model_type": "diffusion_cond", "sample_rate": 44100}))
    folder_paths.add_model_folder_path("stable_audio_3", str(tmp_path))
    try:
        message = nodes.SA3ModelLoader.validate_inputs(model_name="other-model")
        assert message.startswith("Stable Audio 3 Model Loader: model_name 'other-model' is not a Stable Audio 3 "
                                  "model (got ")
        assert "not a Stable Audio 3 generation model" in message
        with pytest.raises(ValueError, match="is not a Stable Audio 3 model"):
            nodes.SA3ModelLoader.execute(model_name="other-model", precision="auto", attention="auto",
                                         padding_mode="exact", download=False)
    finally:
        folder_paths.folder_names_and_paths["stable_audio_3"][0].remove(str(tmp_path))


def test_lora_errors():
    small = load_handle(SMALL)
    with pytest.raises(ValueError, match=r"Stable Audio 3 LoRA Strength: model has no LoRA \(got 0 LoRAs"):
        nodes.SA3LoraStrength.execute(model=small, lora_index=0, target="dit", strength=0.5)
    (with_lora,) = nodes.SA3LoraLoader.execute(model=small, lora_name="tiny-small/lora.safetensors", strength_dit=1.0,
                                               strength_conditioner=1.0).args
    with pytest.raises(ValueError, match=r"lora_index 2 is out of range \(got 2, expected 0..1 for 1 LoRA"):
        nodes.SA3LoraStrength.execute(model=with_lora, lora_index=2, target="dit", strength=0.5)
    with pytest.raises(ValueError, match=r"lora_name 'missing\.safetensors' is not a LoRA in models/loras"):
        nodes.SA3LoraLoader.execute(model=small, lora_name="missing.safetensors", strength_dit=1.0,
                                    strength_conditioner=1.0)
    medium = load_handle("tiny-medium")
    before = [dit.weight.clone() for dit in medium.model.dit.modules() if isinstance(dit, torch.nn.Linear)]
    with pytest.raises(ValueError, match=r"Stable Audio 3 LoRA Loader: lora_name 'tiny-small/lora.safetensors' does "
                                         r"not fit 'tiny-medium' \("):
        nodes.SA3LoraLoader.execute(model=medium, lora_name="tiny-small/lora.safetensors", strength_dit=1.0,
                                    strength_conditioner=1.0)
    after = [dit.weight for dit in medium.model.dit.modules() if isinstance(dit, torch.nn.Linear)]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))  # a LoRA that does not fit: no change


# --- sampling options ----------------------------------------------------------------------------

OPTIONS = dict(cfg_interval_min=0.0, cfg_interval_max=1.0, cfg_rescale=0.0, cfg_norm_threshold=0.0,
               schedule_shift="default", duration_padding=6.0)


@pytest.mark.parametrize("shift, message", [
    ("karras", "schedule_shift.type must be one of 'logsnr', 'full', 'flux', 'none' (got 'karras')."),
    ("flux alpha=3", "each schedule_shift parameter of a 'flux' shift must be one of 'min_length', 'max_length', "
                     "'alpha_min', 'alpha_max' (got 'alpha')."),
    ("flux alpha_min", "schedule_shift must be '<type> name=value ...' such as"),
    ("flux alpha_min=nan", "schedule_shift.alpha_min must be a number from 0.001 to 1000 (got nan)."),
    ("full min_length=64 max_length=8", "schedule_shift.max_length must be above min_length (64) (got 8)."),
    ("x" * 1001, "schedule_shift must be a shift of at most 1,000 characters"),
])
def test_sampling_options_refuse_bad_shifts_when_queued(shift, message):
    prefix = "Stable Audio 3 Sampling Options: "
    assert nodes.SA3SamplingOptions.validate_inputs(schedule_shift=shift).startswith(prefix + message)
    with pytest.raises(ValueError) as e:
        nodes.SA3SamplingOptions.execute(**{**OPTIONS, "schedule_shift": shift})
    assert str(e.value).startswith(prefix + message), str(e.value)


@pytest.mark.parametrize("change, message", [
    (dict(cfg_interval_min=0.8, cfg_interval_max=0.2), "cfg_interval must run from a lower to a higher noise level "
                                                       "(got from 0.8, to 0.2). Swap the two values."),
    (dict(cfg_interval_max=float("nan")), "cfg_interval_max must be a number from 0 to 1 (got nan)."),
    (dict(cfg_rescale=1.5), "cfg_rescale must be a number from 0 to 1 (got 1.5)."),
    (dict(cfg_norm_threshold=-1.0), "cfg_norm_threshold must be a number from 0 to 1000 (got -1)."),
    (dict(duration_padding=float("inf")), "duration_padding must be a number from 0 to 384 (got inf)."),
])
def test_sampling_options_refuse_bad_numbers_before_any_work(change, message):
    with pytest.raises(ValueError) as e:
        nodes.SA3SamplingOptions.execute(**{**OPTIONS, **change})
    assert str(e.value).startswith("Stable Audio 3 Sampling Options: " + message), str(e.value)


def test_sampling_options_defaults_and_linked_shift():
    assert nodes.SA3SamplingOptions.validate_inputs(schedule_shift=None) is True
    assert nodes.SA3SamplingOptions.validate_inputs(schedule_shift="none") is True
    (options,) = nodes.SA3SamplingOptions.execute(**OPTIONS).args
    assert options.sample_kwargs() == dict(cfg_interval=(0.0, 1.0), scale_phi=0.0, cfg_norm_threshold=0.0,
                                           dist_shift=None)
    assert options.duration_padding_sec == 6.0


def test_sampler_refuses_what_is_not_options():
    h = load_handle(SMALL)
    pos, _ = _encode(h)
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Sampler: options is not SA3 sampling options \(got dict\)"):
        nodes.SA3Sampler.execute(model=h, positive=pos, seed=0, steps=1, cfg=1.0, sampler="default for the model",
                                 apg_scale=1.0, options={"cfg_interval": (0, 1)})

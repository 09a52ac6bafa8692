"""Every node's ``execute`` chained as a ComfyUI graph gives the same audio as ``generate()``,
bit for bit, on both tiny fixture models (SAME-S small, SAME-L medium)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import fixture_root
from tests.nodes.conftest import load_handle, load_reference, nodes

MODELS = ["tiny-small", "tiny-medium"]
DEFAULT = "default for the model"
OPTION_DEFAULTS = dict(cfg_interval_min=0.0, cfg_interval_max=1.0, cfg_rescale=0.0, cfg_norm_threshold=0.0,
                       schedule_shift="default", duration_padding=6.0)


def _wave(seconds: float, sr: int, channels: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(channels, int(seconds * sr), generator=g) * 2 - 1) * 0.5


def _audio(wave: torch.Tensor, sr: int) -> dict:
    return {"waveform": wave[None], "sample_rate": sr}


def run_graph(h, *, prompt="a dog barking", negative_prompt="", duration=3.0, durations="", per_line=False,
              batch_size=1, seed=7, steps=4, cfg=1.0, sampler=DEFAULT, apg_scale=1.0, init_audio=None,
              init_noise_level=1.0, inpaint_audio=None, mask_mode=None, regions="", keep_seconds=0.0,
              connect_negative=True, chunked="auto", old_empty_latent=False, sources="audio", options=None):
    """Loader output -> Text Encode -> [Encode Audio, Inpaint Regions] -> Sampler -> Decode: the durations
    are set once, on Text Encode. ``old_empty_latent``: the graph of older workflows, with the
    deprecated SA3 Empty Latent repeating the durations and setting the batch size. Sources go to the
    sampler's AUDIO inputs (``sources="audio"``) or through SA3 Encode Audio (``"latent"``).
    ``options``: SA3 Sampling Options' widgets over their defaults (None: the node is left out)."""
    batch = {} if old_empty_latent else {"batch_size": batch_size}
    pos, neg = nodes.SA3TextEncode.execute(model=h, prompt=prompt, negative_prompt=negative_prompt, duration=duration,
                                           one_prompt_per_line=per_line, durations=durations, **batch).args
    extra, plan = {}, {}
    if old_empty_latent:
        (latent,) = nodes.SA3EmptyLatent.execute(model=h, duration=duration, batch_size=batch_size,
                                                 durations=durations).args
        extra["latent"] = plan["latent"] = latent
    for audio, as_audio, as_latent in ((init_audio, "init_audio", "init_latent"),
                                       (inpaint_audio, "inpaint_audio", "inpaint_source")):
        if audio is not None and sources == "audio":
            extra[as_audio] = audio
        elif audio is not None:
            (extra[as_latent],) = nodes.SA3EncodeAudio.execute(model=h, audio=audio, **plan).args
    if init_audio is not None:
        extra["init_noise_level"] = init_noise_level
    if mask_mode is not None:
        (extra["inpaint_mask"],) = nodes.SA3InpaintMask.execute(mode=mask_mode, regions=regions,
                                                               keep_seconds=keep_seconds, **plan).args
    if connect_negative:
        extra["negative"] = neg
    if options is not None:
        (extra["options"],) = nodes.SA3SamplingOptions.execute(**{**OPTION_DEFAULTS, **options}).args
    (sampled,) = nodes.SA3Sampler.execute(model=h, positive=pos, seed=seed, steps=steps, cfg=cfg, sampler=sampler,
                                          apg_scale=apg_scale, **extra).args
    (audio,) = nodes.SA3Decode.execute(model=h, latent=sampled, chunked=chunked, trim=True).args
    return audio


def assert_same(audio: dict, expected: torch.Tensor) -> None:
    assert audio["sample_rate"] == 44100
    wav = audio["waveform"]
    assert wav.dtype == torch.float32 and wav.device.type == "cpu" and wav.shape[1] == 2
    assert wav.shape == expected.shape
    assert torch.equal(wav, expected), f"max abs diff {(wav - expected).abs().max().item():.3g}"


@pytest.mark.parametrize("name", MODELS)
def test_text_to_audio(name):
    h, ref = load_handle(name), load_reference(name)
    assert_same(run_graph(h), ref.generate("a dog barking", duration=3.0, steps=4, seed=7))


@pytest.mark.parametrize("name", MODELS)
def test_text_to_audio_cfg_negative_apg_sampler(name):
    h, ref = load_handle(name), load_reference(name)
    audio = run_graph(h, negative_prompt="low quality", cfg=3.0, apg_scale=0.5, sampler="euler", seed=11)
    expected = ref.generate("a dog barking", negative_prompt="low quality", duration=3.0, steps=4, seed=11,
                            cfg_scale=3.0, apg_scale=0.5, sampler_type="euler")
    assert_same(audio, expected)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("old_empty_latent", [False, True])
def test_batch_of_one_prompt(name, old_empty_latent):
    h, ref = load_handle(name), load_reference(name)
    audio = run_graph(h, batch_size=2, negative_prompt="hiss", cfg=2.0, seed=3, old_empty_latent=old_empty_latent)
    expected = ref.generate("a dog barking", negative_prompt="hiss", duration=3.0, steps=4, seed=3, batch_size=2,
                            cfg_scale=2.0)
    assert_same(audio, expected)


@pytest.mark.parametrize("name", MODELS)
def test_per_batch_prompts_and_durations(name):
    h, ref = load_handle(name), load_reference(name)
    audio = run_graph(h, prompt="rain on a roof\n\n  a cat purring  \n", per_line=True, durations="2, 3.5",
                      batch_size=1, negative_prompt="noise", cfg=2.0, seed=5)
    expected = ref.generate(["rain on a roof", "a cat purring"], negative_prompt="noise", duration=[2.0, 3.5],
                            batch_size=2, steps=4, seed=5, cfg_scale=2.0)
    assert_same(audio, expected)


@pytest.mark.parametrize("name", MODELS)
def test_audio_to_audio(name):
    h, ref = load_handle(name), load_reference(name)
    wave = _wave(2.5, 32000, 1, seed=1)  # mono at another rate
    audio = run_graph(h, init_audio=_audio(wave, 32000), init_noise_level=0.7, seed=9)
    expected = ref.generate("a dog barking", duration=3.0, steps=4, seed=9, init_audio=(32000, wave),
                            init_noise_level=0.7)
    assert_same(audio, expected)


@pytest.mark.parametrize("name", MODELS)
def test_inpaint_regions(name):
    h, ref = load_handle(name), load_reference(name)
    wave = _wave(3.0, 44100, 2, seed=2)
    audio = run_graph(h, inpaint_audio=_audio(wave, 44100), mask_mode="regions", regions="0.5-1.0, 2-2.5", seed=4)
    expected = ref.generate("a dog barking", duration=3.0, steps=4, seed=4, inpaint_audio=(44100, wave),
                            inpaint_mask_start_seconds=[0.5, 2.0], inpaint_mask_end_seconds=[1.0, 2.5])
    assert_same(audio, expected)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("old_empty_latent", [False, True])
def test_continuation(name, old_empty_latent):
    h, ref = load_handle(name), load_reference(name)
    wave = _wave(1.5, 48000, 2, seed=3)
    audio = run_graph(h, duration=4.0, inpaint_audio=_audio(wave, 48000), mask_mode="continuation",
                      keep_seconds=1.5, seed=6, old_empty_latent=old_empty_latent)
    expected = ref.generate("a dog barking", duration=4.0, steps=4, seed=6, inpaint_audio=(48000, wave),
                            inpaint_mask_start_seconds=1.5, inpaint_mask_end_seconds=4.0)
    assert_same(audio, expected)


@pytest.mark.parametrize("name", MODELS)
def test_audio_to_audio_and_inpaint_together(name):
    """Both sources: the SAME-L encoder draws come init first, then inpaint, as in generate()."""
    h, ref = load_handle(name), load_reference(name)
    a, b = _wave(3.0, 44100, 2, seed=4), _wave(3.0, 22050, 1, seed=5)
    audio = run_graph(h, init_audio=_audio(a, 44100), init_noise_level=0.8, inpaint_audio=_audio(b, 22050),
                      mask_mode="regions", regions="1-2", seed=8)
    expected = ref.generate("a dog barking", duration=3.0, steps=4, seed=8, init_audio=(44100, a),
                            init_noise_level=0.8, inpaint_audio=(22050, b), inpaint_mask_start_seconds=1.0,
                            inpaint_mask_end_seconds=2.0)
    assert_same(audio, expected)


@pytest.mark.parametrize("name", MODELS)
def test_lora_stack(name):
    h, ref = load_handle(name), load_reference(name)
    loras = fixture_root() / "loras" / name
    if not (loras / "lora.safetensors").is_file():
        pytest.skip(f"no LoRA fixtures for {name}")
    first, second = f"{name}/lora.safetensors", f"{name}/dora-rows.safetensors"
    (m1,) = nodes.SA3LoraLoader.execute(model=h, lora_name=first, strength_dit=0.8, strength_conditioner=1.0).args
    (m2,) = nodes.SA3LoraLoader.execute(model=m1, lora_name=second, strength_dit=1.0, strength_conditioner=0.5).args
    (m3,) = nodes.SA3LoraStrength.execute(model=m2, lora_index=2, target="dit", strength=0.6).args
    assert h.loras == () and len(m1.loras) == 1 and m2.loras[1].strength_dit == 1.0  # upstream outputs unchanged
    audio = run_graph(m3, seed=12)
    try:
        ref.load_lora([loras / "lora.safetensors", loras / "dora-rows.safetensors"])
        ref.set_lora_strength(0.8, lora_index=0, target="dit")
        ref.set_lora_strength(1.0, lora_index=0, target="conditioner")
        ref.set_lora_strength(0.6, lora_index=1, target="dit")
        ref.set_lora_strength(0.5, lora_index=1, target="conditioner")
        expected = ref.generate("a dog barking", duration=3.0, steps=4, seed=12)
    finally:
        ref.unload_lora()
    assert_same(audio, expected)
    # the loader's own output still generates without LoRA (the shared modules are re-synced)
    assert_same(run_graph(h), ref.generate("a dog barking", duration=3.0, steps=4, seed=7))


@pytest.mark.parametrize("chunked", ["auto", "off"])
def test_long_decode_chunked_and_not(chunked, record):
    """7 s needs 130 latent frames: past the 128-frame chunk size, so 'auto' decodes in chunks."""
    h, ref = load_handle("tiny-medium"), load_reference("tiny-medium")
    audio = run_graph(h, duration=7.0, steps=2, chunked=chunked, seed=2)
    expected = ref.generate("a dog barking", duration=7.0, steps=2, seed=2,
                            chunked_decode=None if chunked == "auto" else False)
    assert_same(audio, expected)
    decode_updates = record.progress[2:]  # after the two sampler steps
    assert decode_updates[-1][0] == decode_updates[-1][1]
    assert len(decode_updates) == (2 if chunked == "auto" else 1)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="weight release is Linux-only")
def test_low_memory_loader_releases_parts_and_keeps_the_audio(monkeypatch):
    loading = nodes.comfy_models.loading  # the pack's own copy of sa3.loading

    h, ref = load_handle("tiny-small"), load_reference("tiny-small")
    (low,) = nodes.SA3ModelLoader.execute(model_name="tiny-small", precision="fp32", attention="auto",
                                          padding_mode="exact", download=False, low_memory=True).args
    released = []
    original = loading.release_mapped_weights
    monkeypatch.setattr(loading, "release_mapped_weights", lambda m: released.append(m) or original(m))
    expected = ref.generate("a dog barking", duration=3.0, steps=4, seed=7)
    assert_same(run_graph(low), expected)
    assert_same(run_graph(low), expected)  # again, from re-read pages
    parts = {type(m).__name__ for m in released}
    assert parts == {"SA3TextParts", "SA3DiffusionTransformer", "SA3Autoencoder"}
    released.clear()
    run_graph(h)  # the default loader keeps everything resident
    assert released == []


def test_mixed_bf16_autoencoder_from_the_loader_matches_the_library():
    """The loader's autoencoder_precision reaches SAME: the graph equals generate() with the same
    SAME precision, bit for bit, and differs from the fp32 default."""
    from sa3 import StableAudioModel

    (mixed,) = nodes.SA3ModelLoader.execute(model_name="tiny-small", precision="fp32", attention="auto",
                                            padding_mode="exact", download=False,
                                            autoencoder_precision="bf16-mixed").args
    assert mixed.model.autoencoder.compute_dtype == torch.bfloat16
    ref = StableAudioModel.from_pretrained(fixture_root() / "tiny-small", device="cpu", dtype="fp32",
                                           autoencoder_dtype="bf16-mixed")
    expected = ref.generate("a dog barking", duration=3.0, steps=4, seed=7)
    audio = run_graph(mixed)
    assert_same(audio, expected)
    assert not torch.equal(audio["waveform"], load_reference("tiny-small").generate("a dog barking", duration=3.0,
                                                                                    steps=4, seed=7))


@pytest.mark.parametrize("name", ["tiny-small"])
@pytest.mark.parametrize("case", ["a2a", "inpaint", "continuation"])
def test_sources_as_latents_equal_generate_without_encoder_noise(name, case):
    """SAME-S draws no encoder noise, so SA3 Encode Audio's latents, encoded at the generation's length
    (its latent input), give generate()'s audio too."""
    h, ref = load_handle(name), load_reference(name)
    wave = _wave(2.0, 32000, 2, seed=7)
    graph = {"a2a": dict(init_audio=_audio(wave, 32000), init_noise_level=0.6),
             "inpaint": dict(inpaint_audio=_audio(wave, 32000), mask_mode="regions", regions="0.5-1.5"),
             "continuation": dict(inpaint_audio=_audio(wave, 32000), mask_mode="continuation", keep_seconds=2.0)}
    call = {"a2a": dict(init_audio=(32000, wave), init_noise_level=0.6),
            "inpaint": dict(inpaint_audio=(32000, wave), inpaint_mask_start_seconds=0.5, inpaint_mask_end_seconds=1.5),
            "continuation": dict(inpaint_audio=(32000, wave), inpaint_mask_start_seconds=2.0,
                                 inpaint_mask_end_seconds=3.0)}
    audio = run_graph(h, sources="latent", old_empty_latent=True, seed=13, **graph[case])
    assert_same(audio, ref.generate("a dog barking", duration=3.0, steps=4, seed=13, **call[case]))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("sources", ["audio", "latent"])
def test_each_source_is_encoded_once_per_graph_run(name, sources, monkeypatch):
    h = load_handle(name)
    autoencoder = h.model.autoencoder
    calls = []
    original = autoencoder.encode
    monkeypatch.setattr(autoencoder, "encode", lambda *a, **k: calls.append(a[0].shape) or original(*a, **k))
    a, b = _wave(3.0, 44100, 2, seed=4), _wave(2.0, 22050, 1, seed=5)
    run_graph(h, init_audio=_audio(a, 44100), init_noise_level=0.8, inpaint_audio=_audio(b, 22050),
              mask_mode="regions", regions="1-2", seed=8, sources=sources)
    assert len(calls) == 2  # one SAME encode per source (init, inpaint), none again in the sampler


def _sampled(h, seed=7):
    pos, neg = nodes.SA3TextEncode.execute(model=h, prompt="a dog barking", negative_prompt="", duration=3.0,
                                           one_prompt_per_line=False, durations="").args
    (sampled,) = nodes.SA3Sampler.execute(model=h, positive=pos, negative=neg, seed=seed, steps=4,
                                          cfg=1.0, sampler=DEFAULT, apg_scale=1.0).args
    return sampled


def _decode(h, latent, **kw):
    (audio,) = nodes.SA3Decode.execute(model=h, latent=latent, chunked="auto", trim=True, **kw).args
    return audio


def test_decoder_seed_choices(caplog):
    """decoder_seed -1 continues the sampler's stream (generate()'s audio); a latent whose stream was dropped
    (a node that rebuilt the dict) decodes with seed 0 and says so; decoder_seed >= 0 decodes with that seed."""
    h, ref = load_handle("tiny-medium"), load_reference("tiny-medium")
    sampled = _sampled(h)
    expected = ref.generate("a dog barking", duration=3.0, steps=4, seed=7)
    assert_same(_decode(h, sampled), expected)
    assert_same(_decode(h, sampled, decoder_seed=-1), expected)
    rebuilt = {k: v for k, v in sampled.items() if k != "sa3_rng"}
    with caplog.at_level("INFO"):
        dropped = _decode(h, rebuilt)
    assert ("Stable Audio 3 Decode: the latent carries no SA3 Sampler random stream ('sa3_rng'); decoding with "
            "seed 0. Set SA3 Decode decoder_seed to choose another.") in caplog.messages
    assert not torch.equal(dropped["waveform"], expected)  # SAME-L's decoder noise differs from the sampler's stream
    assert torch.equal(_decode(h, sampled, decoder_seed=0)["waveform"], dropped["waveform"])
    other = _decode(h, sampled, decoder_seed=5)["waveform"]
    assert not torch.equal(other, dropped["waveform"])
    assert torch.equal(_decode(h, rebuilt, decoder_seed=5)["waveform"], other)  # an explicit seed ignores the stream


@pytest.mark.parametrize("name", MODELS)
def test_sampling_options_equal_generate(name):
    """SA3 Sampling Options -> Sampler -> Decode equals generate() with the official controls, the
    duration padding included (the decoder silences and trims with the sampler's padding)."""
    h, ref = load_handle(name), load_reference(name)
    options = dict(cfg_interval_min=0.3, cfg_interval_max=0.9, cfg_rescale=0.5, cfg_norm_threshold=3.0,
                   schedule_shift="flux min_length=8 max_length=64 alpha_min=1 alpha_max=4", duration_padding=0.0)
    audio = run_graph(h, prompt="rain\nwind", per_line=True, durations="1.5, 2.5", negative_prompt="hiss", cfg=4.0,
                      seed=6, options=options)
    expected = ref.generate(["rain", "wind"], negative_prompt="hiss", duration=[1.5, 2.5], batch_size=2, steps=4,
                            seed=6, cfg_scale=4.0, cfg_interval=(0.3, 0.9), scale_phi=0.5, cfg_norm_threshold=3.0,
                            dist_shift={"type": "flux", "min_length": 8, "max_length": 64, "alpha_min": 1.0,
                                        "alpha_max": 4.0}, duration_padding_sec=0.0)
    assert_same(audio, expected)


@pytest.mark.parametrize("name", MODELS)
def test_default_sampling_options_change_nothing(name):
    """Saved workflows without the options node, and the node at its defaults, give the audio of
    before (the official defaults, bit for bit)."""
    h, ref = load_handle(name), load_reference(name)
    kw = dict(negative_prompt="hiss", cfg=3.0, seed=12)
    without = run_graph(h, **kw)
    assert_same(run_graph(h, **kw, options={}), without["waveform"])
    assert_same(without, ref.generate("a dog barking", negative_prompt="hiss", duration=3.0, steps=4, seed=12,
                                      cfg_scale=3.0))

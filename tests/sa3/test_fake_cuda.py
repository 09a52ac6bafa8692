"""Generation on a (fake) CUDA device: issue #22, proven on the CPU.

``tests/fake_cuda.py`` runs the real arithmetic on the CPU in tensors that say ``cuda:0`` and
raises where a GPU raises (mixed devices, a generator on the wrong device); host syncs are
recorded with the line that made them. Each generation here must run there, give the CPU's
numbers, and make no host sync that grows with the number of steps (none in the step loop).
"""

from __future__ import annotations

import pytest
import torch

from sa3 import StableAudioModel, rng
from sa3 import lora as L
from sa3 import sampling as S
from tests.conftest import assert_matches_golden, case_id, cases, generate_kwargs, require_fixtures
from tests.fake_cuda import DeviceMismatch, FakeCuda, FakeCudaTensor, HostSync, NoFloat64, move_model

MODELS = ("tiny-small", "tiny-medium")
# batch t2a with per-item durations and a negative prompt, CFG 7 with an interval, a2a, inpaint:
# golden cases of both models (each run costs seconds in the harness)
PICKED = {"tiny-small": ("t2a_cfg1_b2_neg_durs", "inpaint_two_regions"),
          "tiny-medium": ("a2a_noise0.5_sr48k", "ctl_cfg_interval_mid")}
CASES = [c for c in cases() if c["case"] in PICKED.get(c["model"], ())]


def fresh_model(name: str) -> StableAudioModel:
    root = require_fixtures()
    if not (root / name).is_dir():
        pytest.skip(f"fixture model {name} not present in {root}")
    return StableAudioModel.from_pretrained(root / name, device="cpu", padding_mode="reference")


def gpu_model(name: str) -> StableAudioModel:
    return move_model(fresh_model(name))


def syncs_by_steps(model: StableAudioModel, steps: tuple[int, ...] = (3, 6), **kwargs) -> list[list[tuple]]:
    """The host syncs (op, line) of one generation per step count."""
    out = []
    for n in steps:
        with FakeCuda() as fc:
            model.generate("a", duration=1.0, steps=n, seed=3, **kwargs)
        out.append(fc.syncs)
    return out


# --- the harness is as strict as a GPU ------------------------------------------------------------


def test_harness_raises_where_a_gpu_does():
    with FakeCuda() as fc:
        x = torch.ones(3, device="cuda")
        assert isinstance(x, FakeCudaTensor) and x.device.type == "cuda"
        with pytest.raises(DeviceMismatch):
            x + torch.ones(3)
        assert (x + torch.tensor(2.0)).device.type == "cuda"  # CPU scalars mix, as on a GPU
        with pytest.raises(RuntimeError, match="device type for generator"):
            torch.randn(3, device="cuda", generator=torch.Generator())
        with pytest.raises(RuntimeError):
            torch.Generator(device="cuda")
        assert x.sum().item() == 3.0 and len(fc.syncs) == 1
        with fc.no_syncs(), pytest.raises(HostSync):
            float(x[0])
        lin = torch.nn.Linear(3, 2)
        with pytest.raises(DeviceMismatch):
            lin(x)


# --- generate() on CUDA ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_golden_case_on_fake_cuda(case):
    """Small and medium: t2a (batch, per-item durations), CFG, a2a, inpaint, a CFG interval: the
    official numbers on a CUDA model with the default CPU generator."""
    model = gpu_model(case["model"])
    with FakeCuda():
        out = model.generate(**generate_kwargs(case))
    assert isinstance(out, FakeCudaTensor)
    assert_matches_golden(case, out.cpu())


@pytest.mark.parametrize("name", MODELS)
def test_no_host_sync_in_the_step_loop(name):
    """Syncs happen once per generation (text encoding, the DiT's step cache per conditioning),
    never per DiT call: twice the steps, the same syncs, with a CFG interval (a look at t per call)
    too (guidance adds its batch's step cache, once)."""
    model = gpu_model(name)
    short, long = syncs_by_steps(model)
    assert short == long
    guided_short, guided_long = syncs_by_steps(model, cfg_scale=7.0, cfg_interval=(0.2, 0.8))
    assert guided_short == guided_long
    extra = {site for _, site in guided_short} - {site for _, site in short}
    assert all(site.startswith("sa3/dit.py:") for site in extra), extra  # DiT.prepare of the CFG batch


def _lora_files(name: str):
    root = require_fixtures() / "loras" / name
    return root / "lora.safetensors", root / "dora-rows.safetensors"


@pytest.mark.parametrize("name", MODELS)
def test_lora_prepared_on_the_offload_device_runs_on_cuda(name):  # issue #22 items 1 and 6
    """SA3 LoRA Loader's order: prepared while the weights are on the CPU, applied after they moved
    to the GPU; a stack with an interval; same audio as the CPU, no sync per step, adapters and
    base copies on the CPU, counted."""
    cpu = fresh_model(name)
    lora, dora = _lora_files(name)
    chain = lambda m: [L.LoRALink(m.prepare_lora(lora), strength_dit=0.8),  # noqa: E731
                       L.LoRALink(m.prepare_lora(dora), interval=(0.3, 0.9))]
    cpu.apply_loras(chain(cpu))
    expected = cpu.generate("a", duration=1.0, steps=4, seed=5)
    gpu = fresh_model(name)
    links = chain(gpu)  # adapters made while the model is on the CPU
    move_model(gpu)
    with FakeCuda():
        gpu.apply_loras(links)
        out = gpu.generate("a", duration=1.0, steps=4, seed=5)
    torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=0)
    stack = gpu.lora
    held = [t.base for t in stack._targets.values()] + [
        x for lo in stack._loras for layer in lo.layers.values() for x in layer.tensors()]
    assert all(not isinstance(t, FakeCudaTensor) and t.device.type == "cpu" for t in held)
    assert stack.host_bytes() == sum(t.nbytes for t in held) > 0
    # the interval LoRA adds no sync site (it reads t from the host schedule); the DiT's cache is
    # rebuilt, with its one check, only when the interval switches the weights
    gpu.unload_lora()
    plain = {site for _, site in syncs_by_steps(gpu, (3,))[0]}
    with FakeCuda():
        gpu.apply_loras(links)
    sites = {site for run in syncs_by_steps(gpu) for _, site in run}
    assert sites <= plain, sites - plain


def test_lora_loaded_on_cuda_keeps_its_state_on_the_host():
    model = gpu_model("tiny-small")
    with FakeCuda():
        model.load_lora(_lora_files("tiny-small")[0])
        model.set_lora_options(0, interval=(0.2, 0.7))
        model.generate("a", duration=1.0, steps=2, seed=1)
    assert all(t.base.device.type == "cpu" for t in model.lora._targets.values())
    assert all(x.device.type == "cpu" for lo in model.lora._loras for la in lo.layers.values() for x in la.tensors())


# --- one rule for random draws -------------------------------------------------------------------


def test_every_draw_takes_a_cpu_generator_for_cuda_tensors():
    """make_noise, the samplers' noise and SAME's draws: CPU generator, CUDA tensors, the CPU stream."""
    with FakeCuda():
        x = torch.zeros(2, 3, 5, device="cuda")
        noise = rng.make_noise(2, 3, 5, rng.make_generator(7), device="cuda")
        step = S._noise_like(x, rng.make_generator(7))
        from sa3.same import _randn

        same = _randn((2, 3, 5), rng.make_generator(7), x)
    expected = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(7))
    for t in (noise, step, same):
        assert isinstance(t, FakeCudaTensor)
        assert torch.equal(t.cpu(), expected)


def test_stream_device_rule():
    assert rng.stream_device("cuda") == torch.device("cpu")
    assert rng.stream_device("cuda", device_parity=True) == torch.device("cuda")
    assert rng.stream_device("cpu", device_parity=True) == torch.device("cpu")


def _recorded_times(sampler, sigmas: torch.Tensor) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t.float())
        return torch.full_like(x, 0.5)

    sampler(velocity, torch.zeros(2, 4, 8), sigmas, generator=torch.Generator().manual_seed(0))
    return seen


@pytest.mark.parametrize("sampler_type", S.SAMPLERS)
def test_dit_call_times_match_the_sampler_calls(sampler_type):
    """The host copy of each DiT call's t equals what the sampler passes (a non-monotone a2a
    schedule, two items of different lengths)."""
    shift = S.make_shift(fresh_model("tiny-small").config.shift)
    sigmas = S.build_schedule(5, 0.9, shift, torch.tensor([20.0, 31.0]))
    sampler = S.get_sampler(sampler_type)
    seen, predicted = _recorded_times(sampler, sigmas), S.dit_call_times(sampler, sigmas, torch.float32)
    assert len(seen) == len(predicted) > 0
    assert all(torch.equal(a, b) for a, b in zip(seen, predicted, strict=True))


# --- Macs: no float64 on the device --------------------------------------------------------------


def test_mps_rule_is_enforced():
    with FakeCuda(no_float64=True):
        x = torch.ones(3, device="cuda")
        for make in (lambda: x.double(), lambda: torch.zeros(2, dtype=torch.float64, device="cuda"),
                     lambda: torch.zeros(2, dtype=torch.float64).to("cuda")):
            with pytest.raises(NoFloat64):
                make()
        assert torch.zeros(2, dtype=torch.float64).sum().dtype == torch.float64  # the CPU keeps float64


def test_resample_on_the_device_without_float64():
    """Issue #22 item 7: the resampler's float64 kernel steps run on the CPU, the convolution on
    the audio's device; same numbers as on the CPU."""
    from sa3.audio import resample

    wav = torch.randn(2, 4800, generator=torch.Generator().manual_seed(0))
    with FakeCuda(no_float64=True):
        out = resample(wav.to("cuda"), 48000, 44100)
    assert isinstance(out, FakeCudaTensor)
    torch.testing.assert_close(out.cpu(), resample(wav, 48000, 44100), atol=1e-6, rtol=0)


@pytest.mark.parametrize("case", [c for c in CASES if c["case"].startswith("a2a")], ids=case_id)
def test_generation_without_float64_on_the_device(case):
    """A generation with an audio input (resampled 48 kHz -> 44.1 kHz) in which any float64 op on
    the device fails, as on a Mac."""
    model = gpu_model(case["model"])
    kwargs = generate_kwargs(case)
    rate, audio = kwargs["init_audio"]
    with FakeCuda(no_float64=True):
        kwargs["init_audio"] = (rate, audio.to("cuda"))
        out = model.generate(**kwargs)
    assert_matches_golden(case, out.cpu())


# --- CUDA parity settings: inside the generation only ------------------------------------------


def test_official_numerics_apply_inside_the_block_only():
    from sa3.devices import official_numerics

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32, matmul.allow_fp16_reduced_precision_reduction)
    matmul.allow_tf32 = cudnn.allow_tf32 = matmul.allow_fp16_reduced_precision_reduction = True
    try:
        with pytest.raises(KeyError), official_numerics("cuda"):
            assert not (matmul.allow_tf32 or cudnn.allow_tf32 or matmul.allow_fp16_reduced_precision_reduction)
            raise KeyError("an error inside the generation")
        assert matmul.allow_tf32 and cudnn.allow_tf32 and matmul.allow_fp16_reduced_precision_reduction
        with official_numerics("cpu"):
            assert matmul.allow_tf32  # nothing changes for a CPU run
    finally:
        matmul.allow_tf32, cudnn.allow_tf32, matmul.allow_fp16_reduced_precision_reduction = before


def test_device_parity_on_the_cpu_is_the_default_stream():
    model = fresh_model("tiny-small")
    plain = model.generate("a", duration=1.0, steps=2, seed=4)
    assert torch.equal(model.generate("a", duration=1.0, steps=2, seed=4, device_parity=True), plain)
    with pytest.raises(TypeError, match="device_parity"):
        model.generate("a", duration=1.0, steps=2, seed=4, device_parity="yes")

"""Our LoRA training step (``sa3.training``) against the official one, step by step, on the same
batches and the same random draws, in fp32 and in the official bf16 mode (issue 25).

    SA3_OFFICIAL_PATH=/path/to/stable-audio-3 PYTHONPATH=/tmp/offdeps \
        python bench/compare_training_reference.py [--model tiny-small] [--steps 4] \
        [--adapters lora dora-rows lora-xs] [--precisions fp32 bf16] [--batch 2] [--crop-seconds 3] \
        [--yardstick] [--check-train-lora]

``SA3_OFFICIAL_PATH`` is a checkout of Stability-AI/stable-audio-3; ``PYTHONPATH`` must reach
``pytorch_lightning`` (install it into a separate folder, never into the project's environment:
``pip install --target /tmp/offdeps --no-deps pytorch_lightning==2.5.5 lightning-utilities
torchmetrics``). Nothing of the official code is copied here: it is imported and driven.

Official side: the model is built as ``scripts/train_lora.py``'s ``load_model`` builds it
(``create_diffusion_cond_from_config`` + ``copy_state_dict``; for bf16 ``.to(bfloat16)`` *before*
the wrapper adds the adapters), then ``DiffusionCondTrainingWrapper`` with the options that script
passes (``pre_encoded=True``, as with ``--encoded_dir``; ``base_precision="bf16"`` or None for
fp32). Its ``training_step`` is driven by hand as a Lightning ``Trainer(precision="bf16-mixed")``
runs it on a CPU: the step (forward and loss) under ``torch.autocast("cpu", bfloat16,
cache_enabled=False)`` (``MixedPrecision.forward_context``), ``backward`` outside it, no grad
scaler, then ``optimizer.step()`` and ``zero_grad()``. fp32 runs the same without autocast. The
trainer attribute the step reads (the optimizer's lr, for a log line) is a stand-in, and its
logger (``StaggeredLogger.log``) is a no-op.

Stand-in modules: ``wandb`` and ``stable_audio_3.interface.aeiou`` (matplotlib plots) are empty
modules in ``sys.modules``: the official training module imports them for logging only.

Same draws. Our step runs first; its draws are recorded (from copies of its generator taken just
before each recipe function) and fed to the official step:

- the batch: our crops of the encoded clips (latents, padding masks) and the clips' prompts and
  ``seconds_total`` become the official pre-encoded batch (the official conditioner runs its own
  T5Gemma on the prompt text: each run's header line says how far its states are from ours). The
  clips' latents are random (no autoencoder: the step starts from pre-encoded latents anyway);
  their prompt states are ours (``encode_captions``), as ``train_lora`` makes them for the
  precision (bf16: under bf16 autocast with the padding rounded, as the official bf16 step);
- timesteps: the standard normal draw inside ``truncated_logistic_normal_rescaled`` (``torch.randn``
  answers it), so the official truncation, flip and shift run on it;
- noise: ``torch.randn_like`` in the step returns our noise (before the OT coupling, which both
  sides then run);
- silence extension: ``Tensor.exponential_`` inside ``create_augmented_padding_mask`` returns our
  draw;
- inpainting: ``random_inpaint_mask`` returns our keep-mask (and the input times it, as it does);
  its own draws are not replayed, the mask is;
- CFG dropout: ``torch.bernoulli`` in the DiT forward returns our drop mask;
- LoRA init: the official ``lora_A`` (global RNG) is overwritten with ours; magnitudes and -XS
  bases are not, their init difference is printed. LoRA dropout is 0 (the official default).

Each official step must consume exactly these draws (one of each), else the script stops.

Printed per step: the loss of both sides and |diff|, the largest |grad diff| over the LoRA
parameters, and the largest |param diff| after the AdamW update; then a summary table.
``--yardstick`` (bf16) adds, on the same draws: the official bf16 run against the official fp32
run (the size of bf16 rounding itself), ours against the official fp32, ours against the official
fed our prompt states, and for -XS types that with the official bases kept in fp32 (the last two
are diagnostics, not official behaviour). ``--check-train-lora`` checks that our hand-stepped loop
gives ``train_lora``'s own losses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sa3 import StableAudioModel  # noqa: E402
from sa3 import training as ours  # noqa: E402
from sa3 import training_recipe as recipe  # noqa: E402
from sa3.lora_files import ADAPTER_PARAMS  # noqa: E402
from sa3.training_data import EncodedClip, EncodedDataset, encode_captions  # noqa: E402

SHARED = Path(os.environ.get("SA3_SHARED", "/work/shared"))
CAPTIONS = ("a synthetic tone number 0", "warm analog pads with slow chords", "drum loop, 120 bpm")
OFFICIAL_OPTIONS = dict(  # what scripts/train_lora.py passes to DiffusionCondTrainingWrapper
    mask_loss_weight=1.0, mask_padding_attention=True, silence_extension_scale_seconds=4.0, use_ema=False,
    log_loss_info=False, pre_encoded=True, timestep_sampler="trunc_logit_normal", timestep_sampler_options={},
    inpainting_config={"mask_kwargs": {"mask_type_probabilities": [0.1, 0.8, 0.1]}},
    use_effective_length_for_schedule=True, ot_coupling=True)


# --- the official package ---------------------------------------------------------------------


def import_official():
    """The official training module, with the logging-only imports stubbed (see the docstring)."""
    path = os.environ.get("SA3_OFFICIAL_PATH")
    if not path:
        sys.exit("set SA3_OFFICIAL_PATH to a checkout of Stability-AI/stable-audio-3")
    sys.path.insert(0, path)
    aeiou = types.ModuleType("stable_audio_3.interface.aeiou")
    aeiou.audio_spectrogram_image = aeiou.pca_point_cloud = None
    sys.modules.setdefault("stable_audio_3.interface.aeiou", aeiou)
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))
    import stable_audio_3.training.diffusion as diffusion

    return diffusion


def build_official_model(model_dir: Path, bf16: bool):
    """scripts/train_lora.py's load_model on a local folder (the T5 read from the folder)."""
    from safetensors.torch import load_file
    from stable_audio_3.factory import create_diffusion_cond_from_config
    from stable_audio_3.loading_utils import copy_state_dict

    cfg = json.loads((model_dir / "model_config.json").read_text())
    for c in cfg["model"]["conditioning"]["configs"]:
        if c["id"] == "prompt":
            c["config"].setdefault("model_path", str(model_dir))
    model = create_diffusion_cond_from_config(cfg)
    copy_state_dict(model, load_file(str(model_dir / "model.safetensors")))
    model.to(dtype=torch.bfloat16 if bf16 else torch.float32).eval().requires_grad_(False)
    if model.pretransform is not None:
        model.pretransform.enable_grad = False
    return model, cfg


class _Logger:
    def log(self, *args, **kwargs):  # the official StaggeredLogger: logging only
        pass


def build_official_wrapper(diffusion, model_dir: Path, adapter: str, rank: int, bf16: bool):
    model, cfg = build_official_model(model_dir, bf16)
    lora_config = {"rank": rank, "alpha": rank, "adapter_type": adapter, "dropout": 0.0, "include": None,
                   "exclude": None}
    optim = {"diffusion": {"optimizer": {"type": "AdamW",
                                         "config": {"lr": 1e-4, "weight_decay": 0.01, "betas": [0.9, 0.95]}}}}
    with contextlib.redirect_stdout(sys.stderr):
        wrapper = diffusion.DiffusionCondTrainingWrapper(
            model, optimizer_configs=optim, sample_rate=cfg.get("sample_rate", 44100),
            sample_size=cfg.get("sample_size"), lora_config=lora_config, lora_state_dict=None, svd_bases_path=None,
            log_every_n_steps=100, base_precision="bf16" if bf16 else None, **OFFICIAL_OPTIONS)
    wrapper._staggered_logger = _Logger()
    return wrapper


def official_lora_params(wrapper) -> dict[str, torch.nn.Parameter]:
    """Official LoRA parameters by file key (``model.<DiT path>...``, ``conditioners...``)."""
    out = {}
    for root in (wrapper.diffusion.model, wrapper.diffusion.conditioner):
        for name, p in root.named_parameters():
            if ".parametrizations." in name and not name.endswith(".original"):
                out[name] = p
    return out


def official_buffers(wrapper, suffix: str) -> dict[str, torch.Tensor]:
    out = {}
    for root in (wrapper.diffusion.model, wrapper.diffusion.conditioner):
        for name, b in root.named_buffers():
            if ".parametrizations." in name and name.endswith(suffix):
                out[name] = b
    return out


# --- the draws ----------------------------------------------------------------------------------


@contextlib.contextmanager
def patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


class Recorder:
    """Wraps the recipe functions our step calls and keeps what they drew."""

    def __init__(self):
        self.draws: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def recording(self):
        d = self.draws
        orig = {n: getattr(recipe, n) for n in ("sample_timesteps", "ot_couple", "extend_padding", "inpaint_masks",
                                                 "cfg_dropout")}

        def sample_timesteps(batch, generator):
            d["u"] = torch.randn(batch, generator=clone(generator))
            return orig["sample_timesteps"](batch, generator)

        def ot_couple(data, noise):
            d["x0"], d["noise"] = data.detach().clone(), noise.clone()
            return orig["ot_couple"](data, noise)

        def extend_padding(padding, generator):
            d["padding"] = padding.clone()
            scale = recipe.SILENCE_EXTENSION_SECONDS * recipe.SAMPLE_RATE / recipe.SAMPLES_PER_LATENT
            d["extra"] = torch.empty(padding.shape[0]).exponential_(1.0 / scale, generator=clone(generator))
            return orig["extend_padding"](padding, generator)

        def inpaint_masks(padding, generator):
            d["keep"] = orig["inpaint_masks"](padding, generator)
            return d["keep"]

        def cfg_dropout(cross, generator, p=recipe.CFG_DROPOUT):
            d["drop"] = torch.bernoulli(torch.full((cross.shape[0], 1, 1), p), generator=clone(generator))
            return orig["cfg_dropout"](cross, generator, p)

        with contextlib.ExitStack() as stack:
            for n, f in (("sample_timesteps", sample_timesteps), ("ot_couple", ot_couple),
                         ("extend_padding", extend_padding), ("inpaint_masks", inpaint_masks),
                         ("cfg_dropout", cfg_dropout)):
                stack.enter_context(patched(recipe, n, f))
            yield


def clone(generator: torch.Generator) -> torch.Generator:
    g = torch.Generator()
    g.set_state(generator.get_state())
    return g


@contextlib.contextmanager
def replaying(diffusion, draws: dict[str, torch.Tensor], counts: dict[str, int]):
    """Make the official step draw ``draws`` (see the module docstring)."""
    randn, randn_like, bernoulli = torch.randn, torch.randn_like, torch.bernoulli
    exponential = torch.Tensor.exponential_
    trunc, augment = diffusion.truncated_logistic_normal_rescaled, diffusion.create_augmented_padding_mask

    def fake_randn(*shape, **kwargs):
        counts["randn"] = counts.get("randn", 0) + 1
        return draws["u"].clone()

    def trunc_replayed(*args, **kwargs):
        with patched(torch, "randn", fake_randn):
            return trunc(*args, **kwargs)

    def randn_like_replayed(x, *args, **kwargs):
        if tuple(x.shape) == tuple(draws["noise"].shape):
            counts["noise"] = counts.get("noise", 0) + 1
            return draws["noise"].to(x.dtype).clone()
        counts["other randn_like"] = counts.get("other randn_like", 0) + 1
        return randn_like(x, *args, **kwargs)

    def exponential_replayed(self, *args, **kwargs):
        counts["exponential"] = counts.get("exponential", 0) + 1
        return self.copy_(draws["extra"])

    def augment_replayed(*args, **kwargs):
        with patched(torch.Tensor, "exponential_", exponential_replayed):
            return augment(*args, **kwargs)

    def inpaint_replayed(sequence, *args, **kwargs):
        counts["inpaint"] = counts.get("inpaint", 0) + 1
        keep = draws["keep"].to(sequence.device, sequence.dtype)
        return sequence * keep, keep

    def bernoulli_replayed(p, *args, **kwargs):
        counts["bernoulli"] = counts.get("bernoulli", 0) + 1
        if tuple(p.shape) == tuple(draws["drop"].shape):
            return draws["drop"].to(p.dtype).clone()
        return bernoulli(p, *args, **kwargs)

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(diffusion, "truncated_logistic_normal_rescaled", trunc_replayed))
        stack.enter_context(patched(diffusion, "create_augmented_padding_mask", augment_replayed))
        stack.enter_context(patched(diffusion, "random_inpaint_mask", inpaint_replayed))
        stack.enter_context(patched(torch, "randn_like", randn_like_replayed))
        stack.enter_context(patched(torch, "bernoulli", bernoulli_replayed))
        yield
    assert torch.randn is randn and torch.Tensor.exponential_ is exponential


# --- the runs -----------------------------------------------------------------------------------


def make_dataset(model, crop: int, seed: int, prompt_precision: str = "fp32") -> EncodedDataset:
    """Encoded clips without the autoencoder: random latents (one shorter than the crop, so padded;
    the others longer, so cropped at random; the same for every precision), our prompt states of
    CAPTIONS (encoded as ``train_lora`` encodes them for the precision), random silence."""
    g = torch.Generator().manual_seed(seed)
    c = model.config.dit.io_channels if hasattr(model.config, "dit") else 32
    lengths = (crop - 5, crop + 9, crop + 17)
    prompts = encode_captions(model.text_encoder, model.conditioner, list(CAPTIONS), prompt_precision)
    clips = [EncodedClip(name=f"clip{i}", latents=torch.randn(c, n, generator=g), prompt=p,
                         seconds_total=math.ceil(n * recipe.SAMPLES_PER_LATENT / recipe.SAMPLE_RATE))
             for i, (n, p) in enumerate(zip(lengths, prompts, strict=True))]
    return EncodedDataset(clips=clips, silence=0.1 * torch.randn(c, crop, generator=g),
                          prompt_precision=prompt_precision)


class OurRun:
    """Our training state as ``train_lora``'s ``_run`` / ``_loop`` set it up, stepped by hand."""

    def __init__(self, model, data, options):
        self.model, self.data, self.options = model, data, options
        device = torch.device("cpu")
        dtype = ours.BASE_PRECISIONS[options.base_precision]
        self.dit = ours._frozen(model.dit, dtype, device)
        self.seconds = ours._frozen(model.conditioner.conditioners["seconds_total"], dtype, device)
        targets = ours._targets(model.dit, model.conditioner, options)
        self.lora = ours._TrainableLoRA(targets, options, ours._derived_generator(options.seed, "init"), device, None,
                                        init_dtype=torch.bfloat16 if options.base_precision == ours.OFFICIAL_BF16
                                        else None)
        self.params = {ours.file_key(*k) + ours.SLOT + n: self.lora.get(k, n)
                       for k in self.lora.keys for n in ADAPTER_PARAMS[self.lora.adapter_type]}
        self.bases = {ours.file_key(*k) + ours.SLOT + n: t for k, (u, v) in self.lora.bases.items()
                      for n, t in (("U", u), ("V", v))}
        self.optimizer = torch.optim.AdamW(list(self.params.values()), lr=options.learning_rate, betas=(0.9, 0.95),
                                           weight_decay=0.01)
        cfg = model.config
        self.shift = ours.make_shift(cfg.training_shift) if cfg.training_shift is not None else None
        self.device = device

    def step(self, step: int):
        o = self.options
        gen = ours._derived_generator(o.seed, "step", step)
        indices = ours._batch_indices(len(self.data), o.batch_size, step, o.seed)
        with ours._autocast(o, self.device):
            loss = ours._step_loss(self.dit, self.seconds, self.lora, self.data, indices, o, self.shift, gen,
                                   self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = {k: p.grad.detach().clone() for k, p in self.params.items()}
        self.optimizer.step()
        return float(loss.detach()), grads, indices


class OfficialRun:
    """The official wrapper stepped by hand (see the module docstring). ``prompt_states``: the
    clips' prompt states (ours) the official prompt conditioner returns in place of its T5Gemma's
    (a diagnostic run, not the official behaviour). ``fp32_bases``: the -XS bases kept in fp32
    (diagnostic too: officially they are bf16 buffers in the bf16 run)."""

    def __init__(self, diffusion, model_dir, adapter, rank, bf16, our_params, prompt_states=None,
                 fp32_bases=False):
        self.diffusion, self.bf16, self.prompt_states = diffusion, bf16, prompt_states
        self.wrapper = build_official_wrapper(diffusion, model_dir, adapter, rank, bf16)
        if fp32_bases:  # diagnostic: the -XS bases back in fp32 after cast_base_to_precision made them bf16
            for suffix in (".U", ".V"):
                for b in official_buffers(self.wrapper, suffix).values():
                    b.data = b.data.float()
        self.params = official_lora_params(self.wrapper)
        missing = sorted(set(our_params) ^ set(self.params))
        if missing:
            raise SystemExit(f"LoRA parameter names differ between the sides, e.g. {missing[:3]}")
        self.init_diff = {}
        with torch.no_grad():
            for k, p in self.params.items():
                if k.endswith("lora_A"):
                    p.copy_(our_params[k])  # the one random init: ours
                else:
                    kind = k.rsplit(".", 1)[1]
                    self.init_diff[kind] = max(self.init_diff.get(kind, 0.0),
                                               (p.float() - our_params[k].float()).abs().max().item())
        opt = self.wrapper.configure_optimizers()
        self.optimizer = opt[0] if isinstance(opt, (list, tuple)) else opt
        self.wrapper._trainer = types.SimpleNamespace(optimizers=[self.optimizer])

    def bases_diff(self, our_bases: dict[str, torch.Tensor]) -> str:
        """-XS bases (buffers): max |official - ours| as stored, and with ours rounded to the
        official buffer's dtype (what a matmul under autocast reads either way)."""
        if not our_bases:
            return ""
        raw = rounded = 0.0
        for suffix in (".U", ".V"):
            for name, b in official_buffers(self.wrapper, suffix).items():
                mine = our_bases[name]
                raw = max(raw, (b.float() - mine).abs().max().item())
                rounded = max(rounded, (b.float() - mine.to(b.dtype).float()).abs().max().item())
        dtype = str(next(iter(official_buffers(self.wrapper, ".U").values())).dtype).replace("torch.", "")
        return f"; -XS bases: official {dtype}, max |diff| {raw:.1e} ({rounded:.1e} with ours rounded to {dtype})"

    def _prompt_override(self, indices):
        conditioner = self.wrapper.diffusion.conditioner.conditioners["prompt"]
        if self.prompt_states is None:
            return contextlib.nullcontext()
        forward = conditioner.forward

        def ours_instead(inputs, device):
            _, mask = forward(inputs, device)
            return torch.stack([self.prompt_states[i] for i in indices]).to(device), mask

        return patched(conditioner, "forward", ours_instead)

    def step(self, batch, draws, indices):
        counts: dict[str, int] = {}
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False, enabled=self.bf16)
        with replaying(self.diffusion, draws, counts), self._prompt_override(indices), autocast:
            loss = self.wrapper.training_step(batch, 0)
        loss.backward()
        grads = {k: p.grad.detach().clone() for k, p in self.params.items()}
        self.optimizer.step()
        self.optimizer.zero_grad()
        return float(loss.detach()), grads, counts


def official_batch(data: EncodedDataset, indices, draws, wrapper):
    """Our crops as the official pre-encoded batch (divided by the pretransform scale there)."""
    x0 = draws["x0"]
    scale = getattr(wrapper.diffusion.pretransform, "scale", 1.0)
    reals = x0 * scale
    if scale != 1.0 and not torch.equal(reals / scale, x0):
        raise SystemExit(f"pretransform scale {scale} does not round-trip the latents exactly")
    metadata = [{"prompt": CAPTIONS[i], "seconds_total": data.clips[i].seconds_total,
                 "padding_mask": [draws["padding"][j]]} for j, i in enumerate(indices)]
    return reals, metadata


def diffs(loss_a, grads_a, params_a, loss_b, grads_b, params_b) -> tuple[float, float, float]:
    """|loss diff|, max |grad diff|, max |param diff| over the LoRA tensors."""
    grad = max((grads_a[k].float() - grads_b[k].float()).abs().max().item() for k in grads_a)
    param = max((params_a[k].float() - params_b[k].float()).abs().max().item() for k in grads_a)
    return abs(loss_a - loss_b), grad, param


def run_pair(model, official_diffusion, model_dir, data, adapter, precision, args):
    """Step ours and the official side by side. Returns {comparison: [(loss, grad, param) per step]}:
    "ours vs official", and with --yardstick in bf16 also "official bf16 vs official fp32" (the
    size of bf16 rounding itself), "ours vs official fp32", and "ours vs official, prompt states
    shared" (the official step fed our prompt states: the T5Gemma difference removed); for -XS types
    also that with the official -XS bases kept in fp32."""
    options = ours.LoRATrainingOptions(adapter_type=adapter, rank=args.rank, batch_size=args.batch,
                                       clip_seconds=args.crop_seconds, seed=args.seed, base_precision=precision,
                                       steps=args.steps)
    options = ours.check_options(options, model.config.max_duration)
    bf16 = precision == "bf16"
    mine = OurRun(model, data, options)
    init_params = {k: p.detach().clone() for k, p in mine.params.items()}
    sides = {"official": OfficialRun(official_diffusion, model_dir, adapter, args.rank, bf16, init_params)}
    if args.yardstick and bf16:
        sides["official fp32"] = OfficialRun(official_diffusion, model_dir, adapter, args.rank, False, init_params)
        sides["official, our prompt states"] = OfficialRun(official_diffusion, model_dir, adapter, args.rank, True,
                                                           init_params, [c.prompt for c in data.clips])
        if adapter.endswith("-xs"):
            sides["official, our prompt states, fp32 bases"] = OfficialRun(
                official_diffusion, model_dir, adapter, args.rank, True, init_params, [c.prompt for c in data.clips],
                fp32_bases=True)
    official = sides["official"].wrapper
    prompt_diff = f"{prompt_distance(official, data, bf16):.2e}"
    if bf16:  # the same without autocast: what the bf16 cast of the learned padding embedding alone does
        prompt_diff += f" ({prompt_distance(official, data, False):.2e} without autocast)"
    recorder = Recorder()
    table: dict[str, list[tuple[float, float, float]]] = {}
    losses: list[float] = []
    init = {k: f"{v:.1e}" for k, v in sides["official"].init_diff.items()}
    print(f"\n== {adapter} {precision}: {len(mine.params)} LoRA tensors; init diff (not lora_A) {init}"
          f"{sides['official'].bases_diff(mine.bases)}; prompt states max |diff| {prompt_diff}")
    print("step  comparison                                        loss a        loss b        |diff|    max|grad d|  "
          "max|param d|")
    for step in range(args.steps):
        recorder.draws.clear()
        with recorder.recording():
            loss_a, grads_a, indices = mine.step(step)
        losses.append(loss_a)
        batch = official_batch(data, indices, recorder.draws, sides["official"].wrapper)
        results = {}
        for name, side in sides.items():
            loss_b, grads_b, counts = side.step(batch, recorder.draws, indices)
            expected = {"randn": 1, "noise": 1, "exponential": 1, "inpaint": 1, "bernoulli": 1}
            if counts != expected:
                raise SystemExit(f"{name}: draws replayed {counts}, expected {expected}")
            results[name] = (loss_b, grads_b, side.params)
        pairs = [("ours vs official", (loss_a, grads_a, mine.params), results["official"])]
        if len(sides) > 1:
            pairs += [("official bf16 vs official fp32", results["official"], results["official fp32"]),
                      ("ours bf16 vs official fp32", (loss_a, grads_a, mine.params), results["official fp32"]),
                      ("ours vs official, prompt states shared", (loss_a, grads_a, mine.params),
                       results["official, our prompt states"])]
        if "official, our prompt states, fp32 bases" in results:
            pairs.append(("ours vs official, prompts shared, fp32 -XS bases", (loss_a, grads_a, mine.params),
                          results["official, our prompt states, fp32 bases"]))
        for label, a, b in pairs:
            d = diffs(*a, *b)
            table.setdefault(label, []).append(d)
            print(f"{step + 1:4d}  {label:<48}  {a[0]:.9f}  {b[0]:.9f}  {d[0]:.2e}  {d[1]:.2e}     {d[2]:.2e}")
    if args.check_train_lora:  # our side stepped by hand must be train_lora itself
        with tempfile.TemporaryDirectory() as folder:
            result = ours.train_lora(model, data, Path(folder) / "check.safetensors", options)
        same = result.losses == losses
        print(f"train_lora's own losses {'equal' if same else 'DIFFER FROM'} the hand-stepped ones: {result.losses}")
        if not same:
            raise SystemExit("the hand-stepped loop is not train_lora's: fix OurRun")
    return table


def prompt_distance(wrapper, data: EncodedDataset, bf16: bool) -> float:
    """Max |official conditioner prompt states - ours| over the captions (as the step computes them)."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False, enabled=bf16)
    with torch.no_grad(), autocast:
        cond = wrapper.diffusion.conditioner([{"prompt": c, "seconds_total": 1} for c in CAPTIONS], "cpu")
    states = cond["prompt"][0].float()
    return max((states[i] - data.clips[i].prompt).abs().max().item() for i in range(len(CAPTIONS)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-small", help="fixture name under shared/fixtures, or a folder")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--adapters", nargs="+", default=["lora", "dora-rows", "lora-xs"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--crop-seconds", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--check-train-lora", action="store_true",
                   help="also run train_lora with the same options and check its losses are the hand-stepped ones")
    p.add_argument("--yardstick", action="store_true",
                   help="bf16: also step the official fp32 and the official fed our prompt states")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    diffusion = import_official()
    model_dir = SHARED / "fixtures" / args.model
    if not model_dir.is_dir():
        model_dir = Path(args.model)
    model = StableAudioModel.from_pretrained(model_dir, device="cpu", dtype="fp32")
    crop = int(args.crop_seconds * recipe.SAMPLE_RATE) // recipe.SAMPLES_PER_LATENT
    datasets = {p: make_dataset(model, crop, args.seed, "bf16" if p == "bf16" else "fp32") for p in args.precisions}
    summary = []
    for adapter in args.adapters:
        for precision in args.precisions:
            table = run_pair(model, diffusion, model_dir, datasets[precision], adapter, precision, args)
            for label, rows in table.items():
                summary.append((adapter, precision, label, *(max(r[i] for r in rows) for i in range(3))))
    print(f"\n{args.steps} steps, batch {args.batch}, rank {args.rank}, {args.crop_seconds} s crops ({crop} latents), "
          f"lr 1e-4")
    print("| adapter | precision | comparison | worst loss diff | worst grad diff | worst param diff |")
    print("|---|---|---|---|---|---|")
    for adapter, precision, label, loss, grad, param in summary:
        print(f"| {adapter} | {precision} | {label} | {loss:.2e} | {grad:.2e} | {param:.2e} |")


if __name__ == "__main__":
    main()

"""LoRA: golden parity for every official adapter type (single, stacked, several strengths),
-XS bases, strength/target control, stacking order, intervals and layer filters, failed loads
that leave the model untouched, unload, and half precision.

Legend: O fan_out, I fan_in, r rank, B batch, C latent channels, L latents.

The fixture models are shared with other test files (``tests.conftest.load_model`` caches them),
so every test unloads its LoRAs and checks the base weights came back bit for bit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sa3 import lora as L
from sa3.lora import LoRALoadError, LoRAStack, adapt_weight
from sa3.lora_files import expand_brackets, matches_any, read_lora_file
from tests.conftest import (
    GOLDEN_ATOL,
    GOLDEN_ATOL_XS,
    assert_matches_golden,
    case_id,
    cases,
    load_model,
    manifest,
    require_fixtures,
)

MODELS = ("tiny-small", "tiny-medium")
LORA_CASES = cases("lora")


def _lora_dir(root: Path, model: str) -> Path:
    return root / "loras" / model


def _svd_file(root: Path, case_or_model) -> Path:
    model = case_or_model if isinstance(case_or_model, str) else case_or_model["model"]
    return _lora_dir(root, model) / "svd_bases.safetensors"


def _is_xs(case: dict) -> bool:
    return any(Path(f).stem.endswith("-xs") for f in case.get("lora", {}).get("files", []))


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {**{"dit." + k: v.clone() for k, v in model.dit.state_dict().items()},
            **{"cond." + k: v.clone() for k, v in model.conditioner.state_dict().items()}}


def _assert_same(model, snap: dict[str, torch.Tensor]) -> None:
    now = _snapshot(model)
    assert now.keys() == snap.keys()
    changed = [k for k in snap if not torch.equal(snap[k], now[k])]
    assert not changed, f"weights changed: {changed[:5]}"


@pytest.fixture
def tiny(request):
    """(model, fixture root, base snapshot) for a fixture model; unloads and checks on exit."""
    root = require_fixtures()
    name = getattr(request, "param", "tiny-small")
    if not _lora_dir(root, name).is_dir():
        pytest.skip(f"LoRA fixtures for {name} not present in {root}")
    model = load_model(name)
    model.unload_lora()
    snap = _snapshot(model)
    yield model, root, name, snap
    model.unload_lora()
    _assert_same(model, snap)


def _file(root: Path, name: str, stem: str) -> Path:
    path = _lora_dir(root, name) / stem
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def _weight(model, module: str) -> torch.Tensor:
    """Trace module names are official DiT-wrapper names: ``model.<our DiT path>``."""
    return model.dit.get_submodule(module.removeprefix("model.")).weight


# --- golden parity -------------------------------------------------------------------------------


def _run_case(model, root: Path, case: dict, svd_bases_path) -> tuple[float, float]:
    lora = case.get("lora") or {"files": [], "calls": []}
    if lora["files"]:
        model.load_lora([root / f for f in lora["files"]], svd_bases_path=svd_bases_path)
    for call in lora["calls"]:
        model.set_lora_strength(call["strength"], lora_index=call["lora_index"])
    trace = load_file(root / case["dir"] / "trace.safetensors")
    worst_trace = 0.0
    for key, ref in trace.items():
        if key.startswith("lora.weight."):
            got = _weight(model, key[len("lora.weight."):])
        elif key.startswith(("lora.U.", "lora.V.")):
            _, which, index, module = key.split(".", 3)
            layer = model.lora._loras[int(index)].layers[("dit", module.removeprefix("model."))]
            got = layer.U if which == "U" else layer.V
        else:
            continue
        worst_trace = max(worst_trace, (got - ref).abs().max().item())
    out = model.generate(**case["generate_kwargs"])
    return worst_trace, assert_matches_golden(case, out, atol=GOLDEN_ATOL_XS if svd_bases_path is None and _is_xs(case)
                                              else GOLDEN_ATOL)


@pytest.mark.parametrize("case", LORA_CASES, ids=case_id)
def test_golden_lora_case(case):
    """Every kind:"lora" case; -XS cases fed the reference's stored bases, so 1.5e-5 throughout."""
    root = require_fixtures()
    if not (root / case["dir"]).is_dir() or not (root / case["model"]).is_dir():
        pytest.skip(f"{case_id(case)} not present in {root}")
    model = load_model(case["model"])
    model.unload_lora()
    snap = _snapshot(model)
    svd = _svd_file(root, case) if _is_xs(case) else None
    try:
        worst_trace, _worst_out = _run_case(model, root, case, svd)
    finally:
        model.unload_lora()
    assert worst_trace <= GOLDEN_ATOL, f"{case_id(case)}: effective weights / bases off by {worst_trace:.3g}"
    _assert_same(model, snap)


@pytest.mark.parametrize("tiny", MODELS, indirect=True)
def test_xs_own_svd(tiny):
    """-XS with our own SVD: bases and effective weights within the README's 1e-3, one full case.

    All four -XS files go in one load call (one SVD per layer); the others are set to strength 0,
    which is the identity bit for bit (additive: W + 0; DoRA/BoRA: the strength-0 quirk)."""
    model, root, name, snap = tiny
    single = {c["lora"]["files"][0]: c for c in cases("lora", name) if _is_xs(c) and len(c["lora"]["files"]) == 1}
    files = sorted(single)
    model.load_lora([root / f for f in files])
    for index, f in enumerate(files):
        lora = model.lora._loras[index]
        trace = load_file(root / single[f]["dir"] / "trace.safetensors")
        for key, ref in trace.items():
            if key.startswith("lora.weight."):
                path = key[len("lora.weight.model."):]
                got = adapt_weight(snap[f"dit.{path}.weight"].reshape(ref.shape[0], -1), lora.layers[("dit", path)],
                                   lora.file.adapter_type, lora.file.scaling, 1.0)
                assert (got.reshape(ref.shape) - ref).abs().max() <= GOLDEN_ATOL_XS, (f, key)
            elif key.startswith(("lora.U.", "lora.V.")):
                _, which, _, module = key.split(".", 3)
                layer = lora.layers[("dit", module.removeprefix("model."))]
                assert ((layer.U if which == "U" else layer.V) - ref).abs().max() <= GOLDEN_ATOL_XS, (f, key)
    case = single[f"loras/{name}/bora-xs.safetensors"]
    model.set_lora_strength(0.0)
    model.set_lora_strength(1.0, lora_index=files.index(case["lora"]["files"][0]))
    assert_matches_golden(case, model.generate(**case["generate_kwargs"]), atol=GOLDEN_ATOL_XS)


@pytest.mark.parametrize("tiny", MODELS, indirect=True)
def test_svd_sign_convention(tiny):
    """Our SVD follows the official sign rule; agrees with the stored bases up to SVD noise."""
    model, root, name, _ = tiny
    stored = load_file(_svd_file(root, name))
    w = model.dit.transformer.project_in.weight
    u, v = L.svd_bases(w, 4)
    peak = u.abs().argmax(dim=0)
    assert (u[peak, torch.arange(4)] > 0).all()
    assert (u - stored["model.model.transformer.project_in.weight.U"]).abs().max() < 1e-4
    assert (v - stored["model.model.transformer.project_in.weight.V"]).abs().max() < 1e-4
    u4, s4, vh4 = torch.linalg.svd(w)
    assert torch.allclose(u @ torch.diag(s4[:4]) @ v.T, u4[:, :4] @ torch.diag(s4[:4]) @ vh4[:4], atol=1e-5)


# --- strength, targets, stacking -------------------------------------------------------------------


def test_strength_zero_is_base_for_additive(tiny):
    model, root, name, snap = tiny
    model.load_lora([_file(root, name, "lora.safetensors"), _file(root, name, "lora-xs.safetensors")],
                    svd_bases_path=_svd_file(root, name))
    assert not torch.equal(model.dit.transformer.project_in.weight, snap["dit.transformer.project_in.weight"])
    model.set_lora_strength(0.0)
    _assert_same(model, snap)  # W + 0 * delta == W bit for bit, so generate() equals the base model
    (base_case,) = [c for c in cases("lora", name) if c["case"] == "lora_base"]
    assert_matches_golden(base_case, model.generate(**base_case["generate_kwargs"]))


def test_strength_zero_quirk_for_dora(tiny):
    """Official quirk: DoRA/BoRA at strength exactly 0 skip the magnitude rescale (W unchanged)."""
    model, root, name, snap = tiny
    model.load_lora([_file(root, name, "dora-rows.safetensors")])
    model.set_lora_strength(0.0)
    _assert_same(model, snap)
    model.set_lora_strength(1e-50)  # rounds to fp32 0 as the official buffer does
    _assert_same(model, snap)
    model.set_lora_strength(1e-6)  # any non-zero strength renormalises
    assert not torch.equal(model.dit.transformer.project_in.weight, snap["dit.transformer.project_in.weight"])


def test_strength_changes_apply_without_reload(tiny):
    """The s0.5 and s1 traces are reached from one loaded LoRA by set_lora_strength alone."""
    model, root, name, _ = tiny
    model.load_lora([_file(root, name, "dora-rows.safetensors")])
    by_case = {c["case"]: c for c in cases("lora", name)}
    for case_name, strength in (("lora_dora-rows_s0.5", 0.5), ("lora_dora-rows", 1.0), ("lora_dora-rows_s0.5", 0.5)):
        model.set_lora_strength(strength)
        trace = load_file(root / by_case[case_name]["dir"] / "trace.safetensors")
        for key, ref in trace.items():
            if key.startswith("lora.weight."):
                assert torch.equal(_weight(model, key[len("lora.weight."):]), ref), (case_name, key)


def test_target_changes_only_its_part(tiny):
    model, root, name, snap = tiny
    model.load_lora([_file(root, name, "lora.safetensors")])
    full = _snapshot(model)
    seconds = "cond.conditioners.seconds_total.embedder.embedding.1.weight"
    dit_keys = [k for k in snap if k.startswith("dit.") and not torch.equal(snap[k], full[k])]
    assert dit_keys and not torch.equal(full[seconds], snap[seconds])

    model.set_lora_strength(0.0, target="conditioner")
    now = _snapshot(model)
    assert torch.equal(now[seconds], snap[seconds])
    assert all(torch.equal(now[k], full[k]) for k in dit_keys)

    model.set_lora_strength(1.0, target="conditioner")
    model.set_lora_strength(0.0, target="dit")
    now = _snapshot(model)
    assert torch.equal(now[seconds], full[seconds])
    assert all(torch.equal(now[k], snap[k]) for k in dit_keys)
    info = model.lora.describe()[0]
    assert (info.strength_dit, info.strength_conditioner) == (0.0, 1.0)

    with pytest.raises(ValueError,
                       match=r"Stable Audio 3 LoRA: target must be None, 'dit' or 'conditioner' \(got 'vae'\)"):
        model.set_lora_strength(1.0, target="vae")
    with pytest.raises(ValueError, match=r"lora_index out of range \(got 3, expected 0..0"):
        model.set_lora_strength(1.0, lora_index=3)
    for bad in (float("nan"), float("inf"), "1", None, True, 10.5):
        with pytest.raises(ValueError, match=r"Stable Audio 3 LoRA: strength must be a number from -10 to 10 \(got "):
            model.set_lora_strength(bad)


def test_stacking_order(tiny):
    model, root, name, _ = tiny
    lora, cols = _file(root, name, "lora.safetensors"), _file(root, name, "dora-cols.safetensors")
    xs = _file(root, name, "lora-xs.safetensors")

    def w():
        return model.dit.transformer.project_in.weight.clone()

    model.load_lora([lora, cols])
    ab = w()
    model.unload_lora()
    model.load_lora([cols])
    model.load_lora([lora])  # a second call appends: same chain as [cols, lora]
    assert len(model.lora) == 2 and [i.name for i in model.lora.describe()] == ["dora-cols", "lora"]
    ba = w()
    assert (ab - ba).abs().max() > 1e-3  # DoRA renormalises whatever came before it
    model.unload_lora()
    model.load_lora([lora, xs], svd_bases_path=_svd_file(root, name))
    additive_1 = w()
    model.unload_lora()
    model.load_lora([xs, lora], svd_bases_path=_svd_file(root, name))
    assert torch.allclose(additive_1, w(), atol=1e-6)  # additive adapters commute up to rounding


@pytest.mark.parametrize("tiny", MODELS, indirect=True)
def test_prepared_chains_equal_loaded_ones_and_read_no_file(tiny, monkeypatch):
    """``prepare_lora`` + ``apply_loras`` (what the nodes use) write the same weights, bit for bit,
    as ``load_lora`` + ``set_lora_strength`` + ``set_lora_options``; switching between chains reads
    no file, and the empty chain gives the base weights back."""
    model, root, name, snap = tiny
    bases = _svd_file(root, name)
    files = [_file(root, name, "dora-rows.safetensors"), _file(root, name, "lora-xs.safetensors")]
    model.load_lora(files, svd_bases_path=bases)
    model.set_lora_strength(0.7, lora_index=0, target="dit")
    model.set_lora_strength(0.4, lora_index=1, target="conditioner")
    model.set_lora_options(1, interval=(0.2, 0.9), layer_filter="self_attn, transformer.layers.[0-0]")
    loaded = _snapshot(model)
    model.unload_lora()
    rows, xs = (model.prepare_lora(f, svd_bases_path=bases) for f in files)
    _assert_same(model, snap)  # preparing changes nothing
    monkeypatch.setattr(L, "read_lora_file", lambda path: pytest.fail(f"read {path} again"))
    chain = [L.LoRALink(rows, strength_dit=0.7),
             L.LoRALink(xs, strength_conditioner=0.4, interval=(0.2, 0.9),
                        layer_filter="self_attn, transformer.layers.[0-0]")]
    model.apply_loras(chain)
    _assert_same(model, loaded)
    model.apply_loras([L.LoRALink(xs)])  # another branch's chain on the same modules
    alone = _snapshot(model)
    model.apply_loras(chain)
    _assert_same(model, loaded)
    model.apply_loras([])
    _assert_same(model, snap)
    model.apply_loras([L.LoRALink(xs)])
    _assert_same(model, alone)


def test_apply_loras_checks_settings_before_any_change(tiny):
    model, root, name, snap = tiny
    prepared = model.prepare_lora(_file(root, name, "lora.safetensors"))
    with pytest.raises(ValueError, match=r"^Stable Audio 3 LoRA: strength must be a number from -10 to 10 \(got nan\)"):
        model.apply_loras([L.LoRALink(prepared), L.LoRALink(prepared, strength_dit=float("nan"))])
    with pytest.raises(ValueError, match=r"^Stable Audio 3 LoRA: interval must run from a lower to a higher noise "
                                         r"level \(got from 0.9, to 0.1\)"):
        model.apply_loras([L.LoRALink(prepared, interval=(0.9, 0.1))])
    _assert_same(model, snap)
    other = L.PreparedLoRA(file=prepared.file, layers={("dit", "no.such.layer"): None})
    with pytest.raises(ValueError, match=r"^Stable Audio 3 LoRA: 'lora.safetensors' was prepared for another model "
                                         r"\(got layer 'no.such.layer', not a layer of this one\)"):
        model.apply_loras([L.LoRALink(other)])
    _assert_same(model, snap)


def test_chain_matches_adapt_weight(tiny):
    """The written weight is the chain of adapt_weight links over the original weight."""
    model, root, name, snap = tiny
    model.load_lora([_file(root, name, "bora.safetensors"), _file(root, name, "lora.safetensors")])
    model.set_lora_strength(0.7, lora_index=1)
    key = ("dit", "transformer.layers.0.self_attn.to_qkv")
    w = snap["dit." + key[1] + ".weight"]
    for i, strength in ((0, 1.0), (1, 0.7)):
        lora = model.lora._loras[i]
        w = adapt_weight(w, lora.layers[key], lora.file.adapter_type, lora.file.scaling, strength)
    assert torch.equal(model.dit.get_submodule(key[1]).weight, w)


# --- intervals and layer filters ---------------------------------------------------------------------


def test_interval_switches_dit_only(tiny):
    model, root, name, snap = tiny
    model.load_lora([_file(root, name, "lora.safetensors")])
    adapted = _snapshot(model)
    seconds = "cond.conditioners.seconds_total.embedder.embedding.1.weight"
    model.set_lora_options(0, interval=(0.0, 0.3))
    model.lora.on_step(torch.tensor([0.8, 0.1]))  # official: judged on t[0]
    now = _snapshot(model)
    assert all(torch.equal(now[k], snap[k]) for k in snap if k.startswith("dit."))
    assert torch.equal(now[seconds], adapted[seconds])  # the conditioner is not timed
    model.lora.on_step(torch.tensor([0.3]))  # fp32 t compared with fp32 bounds: inclusive
    _assert_same(model, adapted)
    model.lora.on_step(torch.tensor([0.0]))
    _assert_same(model, adapted)
    model.set_lora_options(0, interval=None)
    model.lora.on_step(torch.tensor([0.9]))
    _assert_same(model, adapted)
    with pytest.raises(ValueError, match=r"interval must run from a lower to a higher noise level \(got from 0.6, "
                                         r"to 0.2\)\. Swap"):
        model.set_lora_options(0, interval=(0.6, 0.2))
    for bad, name in (((float("nan"), 1.0), "from"), ((0.0, float("inf")), "to"), (("0", 1.0), "from"),
                      ((0.0, 1.5), "to")):
        with pytest.raises(ValueError, match=rf"LoRA: interval {name} must be a number from 0 to 1 \(got "):
            model.set_lora_options(0, interval=bad)
    with pytest.raises(ValueError, match=r"LoRA: interval must be two noise levels"):
        model.set_lora_options(0, interval=0.5)


def test_interval_generation_no_per_step_recompute(tiny, monkeypatch):
    """Without intervals a generation never recomputes an adapted weight; with one, only when
    the LoRA switches (twice at most per generation here), and the result lies between."""
    model, root, name, _ = tiny
    calls = []
    real = L.adapt_weight
    monkeypatch.setattr(L, "adapt_weight", lambda *a, **k: calls.append(1) or real(*a, **k))
    model.load_lora([_file(root, name, "lora.safetensors")])
    kwargs = dict(prompt="x", duration=1.0, steps=6, cfg_scale=1.0, seed=3, return_latents=True)
    calls.clear()
    full = model.generate(**kwargs)
    assert not calls
    n_layers = len(model.lora._loras[0].layers) - 1  # DiT layers
    model.set_lora_options(0, interval=(0.0, 0.5))
    calls.clear()
    half = model.generate(**kwargs)
    assert 0 < len(calls) <= 2 * n_layers
    model.set_lora_strength(0.0)
    base = model.generate(**kwargs)
    assert not torch.equal(half, full) and not torch.equal(half, base)


def test_layer_filter(tiny):
    model, root, name, snap = tiny
    model.load_lora([_file(root, name, "lora.safetensors")])
    adapted = _snapshot(model)
    model.set_lora_options(0, layer_filter="Layers.[0-0].self_attn, preprocess_conv")
    now = _snapshot(model)
    for k in snap:
        filtered = k.startswith(("dit.transformer.layers.0.self_attn.", "dit.preprocess_conv."))
        assert torch.equal(now[k], snap[k] if filtered else adapted[k]), k
    assert model.lora.describe()[0].layer_filter == "Layers.[0-0].self_attn, preprocess_conv"
    model.set_lora_options(0, layer_filter="")
    _assert_same(model, adapted)


def test_bracket_expansion_and_rules():
    assert expand_brackets("layers.[0-2].attn") == ["layers.0.attn", "layers.1.attn", "layers.2.attn"]
    assert expand_brackets("a[2-1]b[0-1]") == ["a2b0", "a2b1", "a1b0", "a1b1"]
    assert expand_brackets("plain") == ["plain"]
    assert matches_any("model.transformer.layers.11.ff", ["layers.[10-11].ff"])
    assert not matches_any("model.transformer.layers.1.ff", [])


# --- files and failures --------------------------------------------------------------------------------


def _rewrite(src: Path, dst: Path, *, rename=None, config=None, drop=None, extra=None) -> Path:
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    if rename:
        tensors = {rename(k): v for k, v in tensors.items()}
    if drop:
        tensors = {k: v for k, v in tensors.items() if not drop(k)}
    tensors.update(extra or {})
    if config is not None:
        meta["lora_config"] = json.dumps({**json.loads(meta["lora_config"]), **config})
    save_file(tensors, str(dst), metadata=meta)
    return dst


class _Evil:
    def __reduce__(self):
        return (print, ("this would run code",))


def _bad_files(root: Path, name: str, tmp: Path) -> dict[str, tuple[Path, str]]:
    lora = _file(root, name, "lora.safetensors")
    bad = {
        "unknown keys": (_rewrite(lora, tmp / "renamed.safetensors",
                                  rename=lambda k: k.replace("layers.1.", "layers.7.")),
                         r"layer\(s\) match no layer of this model"),
        "rank mismatch": (_rewrite(lora, tmp / "rank.safetensors", config={"rank": 8}),
                          r"rank mismatch: .* has rank 4 .*expected rank 8"),
        "unknown type": (_rewrite(lora, tmp / "type.safetensors", config={"adapter_type": "lokr"}),
                         r"unknown adapter_type 'lokr'"),
        "shape": (_rewrite(lora, tmp / "shape.safetensors",
                           extra={"model.transformer.project_in.parametrizations.weight.0.lora_A": torch.zeros(4, 3)}),
                  r"shape mismatch for 'model\.transformer\.project_in\.parametrizations\.weight\.0\.lora_A' "
                  r"\(got \(4, 3\), expected \(4, 32\)"),
        "incomplete": (_rewrite(lora, tmp / "incomplete.safetensors",
                                drop=lambda k: k.endswith("to_out.parametrizations.weight.0.lora_B")),
                       r"lacks \['lora_B'\]"),
        "foreign param": (_rewrite(lora, tmp / "foreign.safetensors",
                                   extra={"model.preprocess_conv.parametrizations.weight.0.lora_up": torch.zeros(2)}),
                          r"not lora LoRA parameters"),
    }
    truncated = tmp / "truncated.safetensors"
    truncated.write_bytes(lora.read_bytes()[: lora.stat().st_size // 2])
    bad["corrupted safetensors"] = (truncated, r"cannot be read .*corrupted")
    garbage = tmp / "garbage.ckpt"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    bad["corrupted ckpt"] = (garbage, r"checkpoint cannot be read")
    evil = tmp / "evil.ckpt"
    sd = torch.load(_file(root, name, "lora-ckpt.ckpt"), weights_only=True)
    torch.save({**sd, "hyper_parameters": _Evil()}, evil)
    bad["pickle code"] = (evil, r"needs pickle code execution")
    bad["missing"] = (tmp / "nope.safetensors", r"does not exist")
    other = "tiny-medium" if name == "tiny-small" else "tiny-small"
    other_file = _lora_dir(root, other) / "lora.safetensors"
    if other_file.is_file():
        bad["other variant"] = (other_file, r"shape mismatch for 'model\.transformer\.layers\.")
    return bad


def test_failed_loads_leave_model_unchanged(tiny, tmp_path):
    model, root, name, snap = tiny
    model.load_lora([_file(root, name, "dora-rows.safetensors")])
    model.set_lora_strength(0.5)
    with_one = _snapshot(model)
    good = _file(root, name, "bora.safetensors")
    for what, (path, pattern) in _bad_files(root, name, tmp_path).items():
        with pytest.raises(LoRALoadError, match=pattern) as err:
            model.load_lora([good, path])  # the good file first: nothing of it may stick either
        msg = str(err.value)
        assert msg.startswith("Stable Audio 3 LoRA: ") and repr(str(path)) in msg, (what, msg)
        assert len(model.lora) == 1, what
        _assert_same(model, with_one)
    assert model.lora.describe()[0].strength_dit == 0.5
    model.unload_lora()
    _assert_same(model, snap)
    with pytest.raises(ValueError, match="no LoRA is loaded"):
        model.set_lora_strength(1.0)


def test_ckpt_and_safetensors_agree(tiny, tmp_path):
    """The Lightning .ckpt is read without pickle code; as .safetensors it gives the same weights."""
    model, root, name, _ = tiny
    ckpt = _file(root, name, "lora-ckpt.ckpt")
    parsed = read_lora_file(ckpt)
    assert (parsed.adapter_type, parsed.rank, parsed.alpha) == ("lora", 8, 16.0)
    raw = torch.load(ckpt, weights_only=True)
    as_st = tmp_path / "lora-ckpt.safetensors"
    save_file(raw["state_dict"], str(as_st), metadata={"lora_config": json.dumps(raw["lora_config"])})
    model.load_lora([ckpt])
    a = _snapshot(model)
    model.unload_lora()
    model.load_lora([as_st])
    _assert_same(model, a)


def test_legacy_dora_and_2d_magnitudes(tiny, tmp_path):
    """Legacy "dora" resolves to rows, or to cols when magnitudes are stored (1, I)."""
    model, root, name, _ = tiny
    rows, cols = _file(root, name, "dora-rows.safetensors"), _file(root, name, "dora-cols.safetensors")
    model.load_lora([rows])
    want_rows = _snapshot(model)
    model.unload_lora()
    model.load_lora([_rewrite(rows, tmp_path / "legacy-rows.safetensors", config={"adapter_type": "dora"})])
    _assert_same(model, want_rows)
    model.unload_lora()
    model.load_lora([cols])
    want_cols = _snapshot(model)
    model.unload_lora()
    from safetensors import safe_open

    with safe_open(str(cols), "pt") as f:
        two_d = {k: (f.get_tensor(k)[None] if k.endswith(".magnitude") else f.get_tensor(k)) for k in f.keys()}
    save_file(two_d, str(tmp_path / "legacy-cols.safetensors"),
              metadata={"lora_config": json.dumps({"rank": 2, "alpha": 2.0, "adapter_type": "dora"})})
    assert read_lora_file(tmp_path / "legacy-cols.safetensors").adapter_type == "dora-cols"
    model.load_lora([tmp_path / "legacy-cols.safetensors"])
    _assert_same(model, want_cols)


def test_include_exclude_from_file(tiny):
    model, root, name, snap = tiny
    model.load_lora([_file(root, name, "bora.safetensors")])
    now = _snapshot(model)
    changed = sorted(k.split(".", 1)[1].removesuffix(".weight") for k in snap
                     if k.endswith(".weight") and not torch.equal(now[k], snap[k]))
    manifest_entry = next(e for e in manifest()["loras"][name]
                      if e["name"] == "bora")
    want = sorted(m.removeprefix("model.model.").removeprefix("conditioner.")
                  for m in manifest_entry["adapted_modules"])
    assert changed == want


def test_unload_restores_exactly(tiny):
    model, root, name, snap = tiny
    for stem in ("bora-xs.safetensors", "dora-cols.safetensors", "lora-ckpt.ckpt"):
        model.load_lora([_file(root, name, stem)], svd_bases_path=_svd_file(root, name))
    model.set_lora_strength(1.7, lora_index=1)
    model.set_lora_options(2, interval=(0.2, 0.9), layer_filter="cross_attn")
    model.lora.on_step(torch.tensor([0.5]))
    model.unload_lora()
    _assert_same(model, snap)
    assert model.lora is None


def test_half_precision(tiny):
    """bf16/fp16 layers: computed in fp32 from the bf16 base, cast once; unload is exact."""
    model, root, name, _ = tiny
    import copy

    for dtype in (torch.bfloat16, torch.float16):
        dit, cond = copy.deepcopy(model.dit).to(dtype), copy.deepcopy(model.conditioner).to(dtype)
        base = {k: v.clone() for k, v in dit.state_dict().items()}
        stack = LoRAStack(dit, cond)
        files = [_file(root, name, "dora-rows.safetensors"), _file(root, name, "lora-xs.safetensors")]
        stack.load(files, svd_bases_path=_svd_file(root, name))
        ref = LoRAStack(copy.deepcopy(model.dit), copy.deepcopy(model.conditioner))
        ref.load(files, svd_bases_path=_svd_file(root, name))
        w = dit.transformer.layers[0].self_attn.to_qkv.weight
        w_ref = ref._targets[("dit", "transformer.layers.0.self_attn.to_qkv")].module.weight
        assert w.dtype == dtype
        assert torch.allclose(w.float(), w_ref, rtol=2e-2, atol=2e-2)
        stack.set_strength(0.3)
        stack.unload()
        assert all(torch.equal(v, dit.state_dict()[k]) for k, v in base.items())


def test_svd_bases_file_shape_error(tiny, tmp_path):
    model, root, name, snap = tiny
    bad = tmp_path / "bases.safetensors"
    stored = load_file(_svd_file(root, name))
    save_file({k: v[:, :2].contiguous() for k, v in stored.items()}, str(bad))
    with pytest.raises(LoRALoadError, match=r"SVD bases for '(model\.model|conditioner)\..*\(expected \(.*>=4\)"):
        model.load_lora([_file(root, name, "lora-xs.safetensors")], svd_bases_path=bad)
    _assert_same(model, snap)


def test_adapt_weight_formulas():
    """Hand-written checks of each transform on a small matrix."""
    g = torch.Generator().manual_seed(0)
    w, a, b = torch.randn(6, 5, generator=g), torch.randn(2, 5, generator=g), torch.randn(6, 2, generator=g)
    m_r, m_c = torch.rand(6, generator=g) + 0.5, torch.rand(5, generator=g) + 0.5
    layer = L.LayerAdapter(A=a, B=b, magnitude=m_r, magnitude_r=m_r, magnitude_c=m_c)
    v = w + 1.5 * 0.5 * (b @ a)
    assert torch.allclose(adapt_weight(w, layer, "lora", 1.5, 0.5), v)
    rows = adapt_weight(w, layer, "dora-rows", 1.5, 0.5)
    assert torch.allclose(rows.norm(dim=1), m_r, atol=1e-5)
    cols = adapt_weight(w, L.LayerAdapter(A=a, B=b, magnitude=m_c), "dora-cols", 1.5, 0.5)
    assert torch.allclose(cols.norm(dim=0), m_c, atol=1e-5)
    both = adapt_weight(w, layer, "bora", 1.5, 0.5)
    assert torch.allclose(both.norm(dim=0), m_c, atol=1e-5)
    u, vv = L.svd_bases(w, 2)
    mx = torch.randn(2, 2, generator=g)
    xs = adapt_weight(w, L.LayerAdapter(M=mx, U=u, V=vv), "lora-xs", 2.0, 1.0)
    assert torch.allclose(xs, w + 2.0 * u @ mx @ vv.T, atol=1e-6)
    assert adapt_weight(w, layer, "bora", 1.0, 0.0) is w
    assert math.isclose(L._fp32(0.1), 0.10000000149011612)

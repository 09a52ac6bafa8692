"""The Prompt Assistant library (``sa3.prompt_assistant``) on a tiny random Qwen3.5 built in code.

The whole flow runs through the real tiny model (loading, chat template, seeded sampling, the
fallback after five rejected answers). Where a test needs particular answers (classification
routes, each retry rule), the loaded model's ``complete`` is replaced by a script of answers that
also records what the flow asked: the rules are ours, the words a real model would write are not.
"""

from __future__ import annotations

import random
import socket

import huggingface_hub
import pytest
import torch

from sa3 import prompt_assistant as pa
from tests.prompt_model import copy_to, one_thread, tiny_prompt_model  # noqa: F401 (one_thread: autouse)

GOOD = {
    "music": "Dusty boom bap beat with a mellow Rhodes and vinyl crackle. BPM: 88. Length: 60 seconds",
    "instrument": "Solo cello line with slow vibrato in a warm hall. BPM: 70. Length: 20 seconds",
    "sfx": "Glass bottle shattering on concrete with scattered shards. Length: 2 seconds",
    "one-shot": "Punchy dry snare hit with crisp wires. Length: 1 second",
}


@pytest.fixture(scope="module")
def tiny():
    return pa.load_prompt_model(tiny_prompt_model(), dtype=torch.float32, download=False)


class Script:
    """Answers handed out in order (the last one repeated); every request is recorded."""

    def __init__(self, *answers: str):
        self.answers = list(answers)
        self.calls: list[dict] = []

    def __call__(self, system, user, max_new_tokens, temperature):
        self.calls.append(dict(system=system, user=user, max_new_tokens=max_new_tokens, temperature=temperature))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


@pytest.fixture
def script(tiny, monkeypatch):
    def use(*answers):
        s = Script(*answers)
        monkeypatch.setattr(tiny, "complete", s)
        return s

    return use


# --- the model ----------------------------------------------------------------------------------


def test_loads_the_language_model_of_the_vision_language_checkpoint(tiny):
    assert type(tiny.model).__name__ == "Qwen3_5ForCausalLM"
    assert not any("visual" in name for name, _ in tiny.model.named_parameters())
    assert not tiny.model.training and not any(p.requires_grad for p in tiny.model.parameters())
    assert tiny.tokenizer.chat_template and tiny.name == "Qwen3.5-2B"


def test_default_dtype_is_bf16(tmp_path):
    model = pa.load_prompt_model(copy_to(tmp_path / "m"), download=False)
    assert {p.dtype for p in model.model.parameters()} == {torch.bfloat16}


def test_same_seed_same_text_and_the_global_random_state_is_untouched(tiny):
    torch.manual_seed(1234)
    random.seed(99)
    cpu, py = torch.get_rng_state(), random.getstate()
    first = pa.suggest(tiny, "warm piano loop", "music", seed=7, max_duration=30)
    again = pa.suggest(tiny, "warm piano loop", "music", seed=7, max_duration=30)
    others = {pa.suggest(tiny, "warm piano loop", "music", seed=s, max_duration=30).prompt for s in (8, 9)}
    assert first == again
    assert others - {first.prompt}  # another seed, another text
    assert torch.equal(torch.get_rng_state(), cpu) and random.getstate() == py


def test_random_model_ends_in_the_bounded_fallback(tiny, monkeypatch):
    """The tiny model's text salad breaks the rules: five answers, then the last one is used, with
    the category's tags, no markup, and the category's typical length within the cap."""
    calls = []
    real = tiny.complete
    monkeypatch.setattr(tiny, "complete", lambda *a: calls.append(a[0]) or real(*a))
    out = pa.suggest(tiny, "rain on a tent", "sfx", seed=3, max_duration=4)
    assert calls == [pa.INSTRUCTIONS["sfx"]] * pa.MAX_ATTEMPTS
    assert (out.category, out.attempts, out.accepted, out.duration) == ("sfx", pa.MAX_ATTEMPTS, False, 4.0)
    assert out.prompt.startswith("TrackType: SFX, ") and len(out.prompt) > len("TrackType: SFX, ")
    assert not set("[]*#") & set(out.prompt)


def test_auto_with_the_real_model_settles_a_category(tiny):
    out = pa.suggest(tiny, "warm piano loop", "auto", seed=1, max_duration=120)
    assert out.category in pa.PREFIXES and out.prompt.startswith(pa.PREFIXES[out.category])


# --- classification -----------------------------------------------------------------------------


@pytest.mark.parametrize("answer, category", [
    ("music", "music"), ("music_genre", "music"), ("Music.", "music"),
    ("instrument", "instrument"), ("Instrument", "instrument"),
    ("sfx", "sfx"), ("sound", "sfx"),
    ("one-shot", "one-shot"), ("one_shot", "one-shot"), ("oneshot", "one-shot"),
    ("<think>\nhmm\n</think>\ninstrument", "instrument"),
    ("banana", "sfx"), ("", "sfx"),  # no category named: sfx, as the official code
])
def test_classifier_answer_routes_to_its_instruction_and_tags(tiny, script, answer, category):
    s = script(answer, GOOD[category])
    out = pa.suggest(tiny, "something short", "auto", seed=0, max_duration=120)
    classify, write = s.calls
    assert classify["system"] == pa.CLASSIFY_INSTRUCTION
    assert (classify["max_new_tokens"], classify["temperature"]) == (pa.CLASSIFY_TOKENS, pa.CLASSIFY_TEMPERATURE)
    assert write["system"] == pa.INSTRUCTIONS[category] and write["user"] == pa.request("something short")
    assert (write["max_new_tokens"], write["temperature"]) == (pa.MAX_NEW_TOKENS, pa.TEMPERATURE)
    assert out.category == category and out.prompt.startswith(pa.PREFIXES[category])


@pytest.mark.parametrize("idea, category", [
    ("TrackType: Music, VocalType: Instrumental, funk", "music"),
    ("tracktype: instrument, harp", "instrument"),
    ("TrackType: SFX, door", "sfx"),
])
def test_tags_in_the_idea_decide_without_asking(tiny, script, idea, category):
    s = script(GOOD[category])
    out = pa.suggest(tiny, idea, "auto")
    assert [c["system"] for c in s.calls] == [pa.INSTRUCTIONS[category]]
    assert out.category == category


def test_music_tag_without_instrumental_is_classified(tiny, script):
    s = script("sfx", GOOD["sfx"])
    assert pa.suggest(tiny, "TrackType: Music, a crowd", "auto").category == "sfx"
    assert s.calls[0]["system"] == pa.CLASSIFY_INSTRUCTION


@pytest.mark.parametrize("category", ["music", "instrument", "sfx", "one-shot"])
def test_chosen_category_writes_with_its_instruction_and_tags(tiny, script, category):
    s = script(GOOD[category])
    out = pa.suggest(tiny, "short idea", category, max_duration=120)
    assert [c["system"] for c in s.calls] == [pa.INSTRUCTIONS[category]]
    body, seconds = pa.split_length(GOOD[category])
    assert out == pa.Suggestion(pa.PREFIXES[category] + body, seconds, category, 1, True)


def test_prefixes_are_the_official_tags():
    assert pa.PREFIXES == {"music": "TrackType: Music, VocalType: Instrumental, ",
                           "instrument": "TrackType: Instrument, ", "sfx": "TrackType: SFX, ", "one-shot": ""}


def test_an_answer_with_its_own_tags_gets_no_second_set(tiny, script):
    script("TrackType: SFX, " + GOOD["sfx"])
    assert pa.suggest(tiny, "glass", "sfx").prompt == "TrackType: SFX, " + pa.split_length(GOOD["sfx"])[0]


# --- the retry rules ----------------------------------------------------------------------------

TOO_LONG = " ".join(["word"] * 44) + ". Length: 10 seconds"  # 47 words


@pytest.mark.parametrize("bad, reason", [
    ("[Intro] Dusty beat. BPM: 88. Length: 60 seconds", "markup"),
    ("**Dusty beat**. BPM: 88. Length: 60 seconds", "markup"),
    ("# Dusty beat. BPM: 88. Length: 60 seconds", "markup"),
    ("Dusty beat with soulful female vocals. BPM: 88. Length: 60 seconds", "vocals"),
    ("Dusty beat with a rapper. BPM: 88. Length: 60 seconds", "vocals"),
    ("Dusty beat with a gospel choir. BPM: 88. Length: 60 seconds", "vocals"),
    ("Dusty beat with vinyl crackle. BPM: 88.", "no length"),
    ("Dusty beat. Length: 60 seconds. Nice.", "no length"),
    (TOO_LONG, "too long"),
])
def test_each_rule_writes_the_answer_again(tiny, script, bad, reason):
    assert pa.rejection(pa.clean(bad), "music") == reason
    s = script(bad, GOOD["music"])
    out = pa.suggest(tiny, "boom bap", "music")
    assert len(s.calls) == 2 and (out.attempts, out.accepted) == (2, True)
    assert out.prompt == pa.PREFIXES["music"] + pa.split_length(GOOD["music"])[0]


def test_45_words_are_fine():
    text = " ".join(["word"] * 42) + ". Length: 10 seconds"
    assert len(text.split()) == 45 and pa.rejection(text, "sfx") is None


@pytest.mark.parametrize("category", ["sfx", "one-shot"])
def test_voices_are_a_sound_source_outside_instrumental_categories(tiny, script, category):
    s = script("Stadium crowd chanting with distant voices. Length: 20 seconds")
    out = pa.suggest(tiny, "stadium crowd", category)
    assert len(s.calls) == 1 and out.accepted and "chanting" in out.prompt


def test_bounded_fallback_uses_the_last_answer_without_markup(tiny, script):
    s = script("[Verse] one. Length: 9 seconds", "**Two** with vocals. BPM: 90. Length: 400 seconds")
    out = pa.suggest(tiny, "song", "music", max_duration=120)
    assert len(s.calls) == pa.MAX_ATTEMPTS
    assert out == pa.Suggestion(pa.PREFIXES["music"] + "Two with vocals. BPM: 90.", 120.0, "music", 5, False)


def test_fallback_without_length_takes_the_typical_one_and_an_empty_answer_the_idea(tiny, script):
    s = script("")
    out = pa.suggest(tiny, "  creaky   door ", "sfx", max_attempts=2)
    assert len(s.calls) == 2
    assert out == pa.Suggestion("TrackType: SFX, creaky door", pa.TYPICAL_SECONDS["sfx"], "sfx", 2, False)


def test_answer_is_cleaned_before_the_rules(tiny, script):
    script("<think>\n\n</think>\n\n- \"dusty beat. soft keys. BPM: 88. Length: 60 seconds\"")
    out = pa.suggest(tiny, "beat", "music")
    assert out.prompt == pa.PREFIXES["music"] + "Dusty beat. Soft keys. BPM: 88." and out.attempts == 1


# --- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, body, seconds", [
    ("Rain. Length: 45 seconds", "Rain.", 45.0),
    ("Rain. Length: 45 seconds.", "Rain.", 45.0),
    ("Snare. Length: 1 second", "Snare.", 1.0),
    ("Pad, length: 2.5 seconds", "Pad", 2.5),
    ("Beat. BPM: 90. Length: 120 seconds  ", "Beat. BPM: 90.", 120.0),
    ("Length: 5 seconds of rain", "Length: 5 seconds of rain", None),
])
def test_length_is_split_off(text, body, seconds):
    assert pa.split_length(text) == (body, seconds)


@pytest.mark.parametrize("seconds, cap, expected", [
    (45.0, 120.0, 45.0), (300.0, 120.0, 120.0), (400.0, 380.4353741496599, 380.43), (0.0, 120.0, 1.0),
    (0.5, 120.0, 1.0), (3.0, 0.5, 0.5),
])
def test_duration_is_capped(seconds, cap, expected):
    assert pa.cap_duration(seconds, cap) == expected


def test_suggested_duration_is_capped_to_the_maximum(tiny, script):
    script("Epic score. BPM: 80. Length: 300 seconds")
    assert pa.suggest(tiny, "epic", "music", max_duration=120.0).duration == 120.0


# --- an empty idea --------------------------------------------------------------------------------


@pytest.mark.parametrize("category, chosen", [("auto", "music"), ("music", "music"), ("instrument", "instrument"),
                                              ("sfx", "sfx"), ("one-shot", "one-shot")])
def test_empty_idea_gets_an_example_by_seed_without_a_model(category, chosen):
    picks = [pa.suggest(None, "  ", category, seed=seed, max_duration=100) for seed in range(12)]
    assert picks[3] == pa.suggest(None, "", category, seed=3, max_duration=100)
    texts = {text for text, _ in pa.EXAMPLES[chosen]}
    for out in picks:
        assert out.category == chosen and out.attempts == 0 and out.prompt.startswith(pa.PREFIXES[chosen])
        assert out.prompt[len(pa.PREFIXES[chosen]):] in texts and 1 <= out.duration <= 100
    assert len({out.prompt for out in picks}) > 1


def test_examples_follow_our_own_rules():
    for category, examples in pa.EXAMPLES.items():
        for text, seconds in examples:
            assert pa.rejection(f"{text} Length: {seconds} seconds", category) is None, text


# --- errors ---------------------------------------------------------------------------------------


def test_bad_arguments_are_refused_before_any_work(tiny):
    with pytest.raises(ValueError, match=r"^Stable Audio 3: prompt must be a short text of at most 2,000 "
                                         r"characters \(got 2,001 characters\)\. The assistant expands a short "
                                         r"idea; shorten it\.$"):
        pa.suggest(tiny, "x" * 2001)
    with pytest.raises(ValueError, match=r"category must be one of 'auto', 'music', 'instrument', 'sfx', 'one-shot' "
                                         r"\(got ''\)"):
        pa.suggest(tiny, "rain", "")
    with pytest.raises(ValueError, match=r"max_duration must be a number above 0 seconds \(got nan\)"):
        pa.suggest(tiny, "rain", max_duration=float("nan"))
    with pytest.raises(ValueError, match=r"seed must be an integer from 0 to"):
        pa.suggest(tiny, "rain", seed=-1)
    with pytest.raises(ValueError, match="needs a language model for a non-empty prompt"):
        pa.suggest(None, "rain")


def test_unknown_name_and_broken_folders(tmp_path):
    with pytest.raises(ValueError, match=r"unknown prompt model 'Qwen9'"):
        pa.resolve_prompt_model_dir("Qwen9", download=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match=r"has no config.json"):
        pa.resolve_prompt_model_dir(tmp_path / "empty")
    folder = copy_to(tmp_path / "noweights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(RuntimeError, match=r"has no .safetensors weights"):
        pa.resolve_prompt_model_dir(folder)
    folder = copy_to(tmp_path / "notemplate")
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(RuntimeError, match=r"has no chat template"):
        pa.load_prompt_model(folder)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test."""

    def connect(*args, **kwargs):
        raise AssertionError("the prompt assistant tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", connect)


def test_missing_model_with_download_off_says_so(tmp_path, no_network):
    with pytest.raises(RuntimeError, match=r"of 'Qwen/Qwen3.5-2B' are not in the local cache and downloading is not "
                                           r"possible"):
        pa.load_prompt_model(pa.MODEL_NAME, download=False, cache_dir=tmp_path)


def test_offline_mode_never_downloads(tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match=r"not in the local cache and downloading is not possible \(offline mode"):
        pa.load_prompt_model(pa.REPO_ID, download=True, cache_dir=tmp_path, local_dir=tmp_path / "target")
    assert not (tmp_path / "target" / "config.json").exists()


def test_download_fetches_the_official_repo_with_the_token(tmp_path, monkeypatch):
    calls = []

    def snapshot_download(repo_id, *, allow_patterns, local_dir, token, local_files_only, **kwargs):
        calls.append((repo_id, list(allow_patterns), token, local_files_only))
        copy_to(tmp_path / "fetched")
        return str(tmp_path / "fetched")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    model = pa.load_prompt_model(pa.MODEL_NAME, dtype=torch.float32, download=True)
    assert calls == [("Qwen/Qwen3.5-2B", pa.HUB_FILES, "hf_test", False)]
    assert type(model.model).__name__ == "Qwen3_5ForCausalLM"

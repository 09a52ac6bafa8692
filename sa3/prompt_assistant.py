"""Prompt Assistant: a small chat language model turns a short idea into a full SA3 prompt and a
suggested duration, the way the official app's assistant does (``stable_audio_3/interface/
reprompt.py``), with instructions of our own written from the official Prompt Guide.

The flow, step by step:

1. an empty idea gets one of our example prompts for the category (``auto``: music), picked by
   the seed, without the language model (the official app shows a random music example);
2. ``auto`` is settled: a prompt that already carries the official tags (``TrackType: SFX`` ...)
   keeps their category, otherwise the model answers one word (music, instrument, sfx, one-shot),
   and an answer that names none of them means sfx, as in the official code;
3. the model writes the prompt with the category's instruction; an answer with markup (``[ ] * #``),
   without a final ``Length: N seconds``, with more than 45 words, or, for music and instrument
   (instrumental by their tags), with words about vocals, is written again, up to five tries; after
   the last one its text is used anyway (markup removed), as in the official code;
4. ``Length: N seconds`` becomes the duration (between 1 s and the SA3 model's maximum; the
   category's typical length when the answer has none) and is cut from the text; the category's
   tags go in front (music: ``TrackType: Music, VocalType: Instrumental, ``; instrument:
   ``TrackType: Instrument, ``; sfx: ``TrackType: SFX, ``; one-shot: none, as in the official code).

Sampling is seeded in a forked random state, so a seed always gives the same text on a machine
and the caller's global random state is left as it was. Only plain ``transformers`` and torch
here: the ComfyUI node wraps the loaded model in a ``ModelPatcher``.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checks, loading

logger = logging.getLogger(__name__)

MODEL_NAME = "Qwen3.5-2B"  # what the official app loads (``Qwen/Qwen3.5-2B``, about 4.2 GB in bf16)
REPO_ID = "Qwen/Qwen3.5-2B"
HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt"]  # config, weights, tokenizer, chat template
HUB_REQUIRED = ["config.json", "tokenizer_config.json"]

CATEGORIES = ("auto", "music", "instrument", "sfx", "one-shot")
PREFIXES = {  # the official tags put in front of each category's prompt
    "music": "TrackType: Music, VocalType: Instrumental, ",
    "instrument": "TrackType: Instrument, ",
    "sfx": "TrackType: SFX, ",
    "one-shot": "",
}
TYPICAL_SECONDS = {"music": 90.0, "instrument": 12.0, "sfx": 6.0, "one-shot": 2.0}  # when an answer has no length
MIN_SECONDS = 1.0  # the shortest suggested duration (lengths are whole seconds; 0 would be refused)

MAX_ATTEMPTS = 5  # tries at a clean answer (official)
MAX_WORDS = 45  # longer answers are written again (official)
MAX_NEW_TOKENS = 128  # per answer (official)
TEMPERATURE = 1.11  # writing (official)
CLASSIFY_TOKENS = 16  # the one-word category answer (official)
CLASSIFY_TEMPERATURE = 0.1  # (official)
MAX_IDEA_CHARS = 2_000  # the idea is a short prompt; this bounds the model's input (about 500 tokens)

_MARKUP = re.compile(r"[\[\]*#]")
_VOCALS = re.compile(r"\b(vocals?|vocalists?|sing|singing|singers?|sung|female|male|voices?|choirs?|chorus|"
                     r"raps?|rapping|rappers?|chant(s|ing)?|lyrics?)\b", re.IGNORECASE)
_LENGTH = re.compile(r"\bLength:\s*(\d{1,5}(?:\.\d+)?)\s*seconds?\.?\s*$", re.IGNORECASE)
_TAGS_MUSIC = re.compile(r"tracktype:\s*music", re.IGNORECASE)
_TAGS_INSTRUMENTAL = re.compile(r"vocaltype:\s*instrumental", re.IGNORECASE)
_TAGS_INSTRUMENT = re.compile(r"tracktype:\s*instrument\b", re.IGNORECASE)
_TAGS_SFX = re.compile(r"tracktype:\s*sfx", re.IGNORECASE)
INSTRUMENTAL = ("music", "instrument")  # categories whose tags say instrumental: vocal words are retried

# --- instructions (our own words, from the advice of the official Prompt Guide) ----------------

_SHARED_RULES = (
    "Output only the finished prompt on one line: no heading, list, quotes, brackets, asterisks or "
    "explanation, and at most 40 words in all."
)

CLASSIFY_INSTRUCTION = """Sort a request for a text-to-audio model into exactly one category.
music: a genre, style or scene for a whole instrumental track (lo-fi hip hop, epic trailer score, bossa nova).
instrument: one named instrument or stem played over time, a solo, a loop or a riff (cello solo, funk bass loop).
sfx: a sound effect, foley or ambience that is not music (rain on a tent, door slam, spaceship hum, crowd).
one-shot: a single short hit, note or sample for producers (808 kick, snare, piano stab, riser, impact).
Reply with the category word alone: music, instrument, sfx or one-shot."""

INSTRUCTIONS = {
    "music": f"""You write prompts for Stable Audio 3, a model trained on production-music libraries and their
descriptions. Expand the idea into an instrumental piece: name the genre or style (blending styles is fine),
the instruments and what each one plays or how it sounds, the mood and energy, and the production or recording
character. Choose a tempo that suits the style and a realistic length for a full track (60 to 240 seconds).
Never mention singing, voices or lyrics. {_SHARED_RULES}
End exactly with: BPM: <whole number>. Length: <whole number> seconds
Examples:
Sun-bleached surf rock instrumental with twangy spring-reverb guitar, galloping drums and a bouncing bass line, carefree and bright, recorded live in a small room. BPM: 150. Length: 140 seconds
Late-night neo-soul groove with a dusty Rhodes, round fretless bass, brushed drums and soft string pads, intimate and warm with tape saturation. BPM: 76. Length: 180 seconds""",  # noqa: E501
    "instrument": f"""You write prompts for Stable Audio 3, a model trained on production-music libraries and their
descriptions. Expand the idea into a recording of one instrument or stem: name the instrument, how it is played,
its tone and material, the style or mood it plays in, and the room, microphone or effects. Choose a fitting tempo
and length: 6 to 20 seconds for a loop, 20 to 120 seconds for a solo or stem. Never mention singing, voices or
lyrics. {_SHARED_RULES}
End exactly with: BPM: <whole number>. Length: <whole number> seconds
Examples:
Fingerpicked nylon-string guitar motif, soft and wistful, close-miked in a wooden room with a little plate reverb. BPM: 84. Length: 16 seconds
Slap bass groove loop with a bright punchy attack and tight muted notes, funky and dry. BPM: 108. Length: 10 seconds""",  # noqa: E501
    "sfx": f"""You write prompts for Stable Audio 3 sound effects, from a library of field recordings, foley and
designed sounds with descriptions. Expand the idea into one clear sound or scene: the source, the material and
texture, what happens and how it evolves (attack, decay, movement, passing or approaching), the space (indoor or
outdoor, close or distant, dry or echoing) and any processing. Choose a realistic length: 1 to 3 seconds for hits
and impacts, 3 to 8 for actions, 10 to 60 for ambiences. {_SHARED_RULES}
End exactly with: Length: <whole number> seconds
Examples:
Heavy oak door creaking open slowly, then latching shut with a dull wooden knock, in a stone hallway with a short echo. Length: 5 seconds
Light rain pattering on a canvas tent at night, gusts of wind and distant rolling thunder, close and enveloping. Length: 40 seconds""",  # noqa: E501
    "one-shot": f"""You write prompts for Stable Audio 3 one-shots: single isolated hits, notes or short samples
for music production. Expand the idea into one sound: the instrument or source, how it is struck or played, its
timbre and material, and the recording or processing (dry, close-miked, roomy, saturated, reversed). Choose a short
length: 1 to 3 seconds for drums and hits, up to 10 for pads, drones and risers. {_SHARED_RULES}
End exactly with: Length: <whole number> seconds
Examples:
Tight acoustic snare hit with a crisp crack and short rattling wires, dry and close-miked. Length: 1 second
Detuned analogue brass stab with a fast filter sweep and a short plate reverb tail. Length: 2 seconds""",
}

# prompts for an empty idea, picked by the seed (no language model needed)
EXAMPLES = {
    "music": [
        ("Dreamy synthwave track with pulsing arpeggiated bass, glassy pads, gated snare and a soaring lead, "
         "nostalgic and driving. BPM: 105.", 150),
        ("Cinematic orchestral piece with swelling strings, warm French horns, timpani rolls and a delicate "
         "celesta motif, hopeful and grand. BPM: 80.", 180),
        ("Laid-back lo-fi hip hop beat with a dusty Rhodes, vinyl crackle, deep sub bass and swung boom-bap "
         "drums, cosy and mellow. BPM: 82.", 120),
        ("Upbeat Afrobeat groove with interlocking guitars, punchy horns, talking drum and shakers, joyful and "
         "dancing, recorded live. BPM: 112.", 160),
        ("Minimal deep house track with a round four-on-the-floor kick, airy chords, a rolling bass line and "
         "shuffled hats, hypnotic and warm. BPM: 122.", 200),
    ],
    "instrument": [
        ("Solo cello melody with expressive vibrato and a rich woody body, melancholic, in a large hall. "
         "BPM: 70.", 40),
        ("Funky clavinet rhythm loop with tight muted chords and a wah filter, dry and punchy. BPM: 100.", 10),
        ("Brushed jazz drum groove on a vintage kit with a swinging ride and soft kick, close-miked. BPM: 132.",
         12),
    ],
    "sfx": [
        ("Steam train passing at speed, rhythmic wheel clatter, hissing steam and a fading whistle, outdoors.",
         12),
        ("Campfire crackling and popping in a quiet forest at night, crickets in the distance.", 40),
        ("Heavy metal gate slamming shut in an empty warehouse with a long ringing echo.", 3),
    ],
    "one-shot": [
        ("Deep 808 kick with a short punchy click and a long decaying sub tail.", 2),
        ("Bright glockenspiel note struck softly, ringing clear with a gentle decay.", 2),
        ("Reversed cymbal swell rising into a sharp cut, wide and airy.", 3),
    ],
}


# --- the language model ------------------------------------------------------------------------


class PromptModel:
    """A chat causal language model and its tokenizer (whose chat template frames the messages)."""

    def __init__(self, tokenizer, model: torch.nn.Module, name: str = MODEL_NAME):
        self.tokenizer = tokenizer
        self.model = model
        self.name = name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def complete(self, system: str, user: str, max_new_tokens: int, temperature: float) -> str:
        """The model's sampled answer to one system + user exchange (thinking off), draws from the
        current random state of the model's device."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=False)
        inputs = self.tokenizer(text, return_tensors="pt").to(self.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True,
                                      temperature=temperature, pad_token_id=pad)
        new = out[0, inputs["input_ids"].shape[-1]:]  # (T_new,) the answer's tokens
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()


def resolve_prompt_model_dir(name_or_path: str | Path, *, download: bool = True, local_dir: str | Path | None = None,
                             cache_dir: str | Path | None = None) -> Path:
    """A local folder in Hugging Face layout (``config.json``, weights, tokenizer with a chat
    template), or ``Qwen3.5-2B`` / ``Qwen/Qwen3.5-2B`` from the hub (into ``local_dir`` when given,
    else the HF cache; only the local cache with ``download=False``; HF_TOKEN and offline mode as
    ``sa3.loading.hub_download``)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RuntimeError(f"Stable Audio 3: prompt model folder {str(path)!r} has no config.json; expected a "
                               f"Hugging Face model folder such as huggingface.co/{REPO_ID}.")
        folder = path
    elif str(name_or_path) in (MODEL_NAME, REPO_ID):
        folder = loading.hub_download(REPO_ID, HUB_FILES, HUB_REQUIRED, cache_dir=cache_dir, local_dir=local_dir,
                                      download=download)
    else:
        raise ValueError(f"Stable Audio 3: unknown prompt model {str(name_or_path)!r}: neither a folder nor "
                         f"{MODEL_NAME!r}.")
    if not any(folder.glob("*.safetensors")):
        raise RuntimeError(f"Stable Audio 3: prompt model folder {str(folder)!r} has no .safetensors weights.")
    return folder


def load_prompt_model(name_or_path: str | Path, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.bfloat16, *, download: bool = True,
                      local_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> PromptModel:
    """Load the assistant's language model (text part only: ``AutoModelForCausalLM`` reads the
    language model of Qwen3.5's vision-language checkpoint, as the official app does) in eval
    mode without gradients. bf16 by default, the official choice (2B parameters: 4.2 GB)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_prompt_model_dir(name_or_path, download=download, local_dir=local_dir, cache_dir=cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except (ValueError, KeyError, OSError) as e:  # an unknown model type names the transformers version
        raise RuntimeError(f"Stable Audio 3: cannot load the prompt model in {str(folder)!r} ({e}). Qwen3.5 needs a "
                           "transformers release that knows it: python -m pip install -U transformers.") from e
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"Stable Audio 3: the tokenizer in {str(folder)!r} has no chat template; expected a chat "
                           "model such as Qwen3.5-2B.")
    model = model.to(device).eval().requires_grad_(False)
    logger.info("Stable Audio 3: prompt model %s loaded (%s, %s)", folder, dtype, device)
    return PromptModel(tokenizer, model, name=Path(str(name_or_path)).name)


# --- the flow ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    """What the assistant proposes."""

    prompt: str  # the full prompt, tags in front, without the length
    duration: float  # seconds, within [MIN_SECONDS, the cap]
    category: str  # music, instrument, sfx or one-shot (``auto`` settled)
    attempts: int  # answers written (0: an example for an empty idea)
    accepted: bool  # False: every attempt broke a rule and the last one was used


def check_idea(prompt, where: str | None = None) -> str:
    """The user's idea: a string of at most ``MAX_IDEA_CHARS`` characters."""
    if not isinstance(prompt, str) or len(prompt) > MAX_IDEA_CHARS:
        got = f"{len(prompt):,} characters" if isinstance(prompt, str) else None
        raise checks.fail("prompt", f"a short text of at most {MAX_IDEA_CHARS:,} characters", prompt, where,
                          "The assistant expands a short idea; shorten it.", got=got)
    return prompt


def category_from_tags(prompt: str) -> str | None:
    """The category the official tags in the idea already name, if any."""
    if _TAGS_MUSIC.search(prompt) and _TAGS_INSTRUMENTAL.search(prompt):
        return "music"
    if _TAGS_INSTRUMENT.search(prompt):
        return "instrument"
    if _TAGS_SFX.search(prompt):
        return "sfx"
    return None


def category_from_answer(answer: str) -> str:
    """Map the classifier's answer to a category; an answer naming none of them is sfx (official)."""
    text = strip_thinking(answer).lower()
    for category, pattern in (("music", r"\bmusic"), ("one-shot", r"\bone[\s_-]?shot"),
                              ("instrument", r"\binstrument"), ("sfx", r"\b(sfx|sound)")):
        if re.search(pattern, text):
            return category
    return "sfx"


def classify(model: PromptModel, prompt: str) -> str:
    """``auto``: the tags' category, else the model's one-word answer."""
    tagged = category_from_tags(prompt)
    if tagged is not None:
        return tagged
    answer = model.complete(CLASSIFY_INSTRUCTION, request(prompt), CLASSIFY_TOKENS, CLASSIFY_TEMPERATURE)
    category = category_from_answer(answer)
    logger.info("Stable Audio 3 prompt assistant: %r classified as %s (answer %r)", prompt, category, answer)
    return category


def request(prompt: str) -> str:
    """The user message: the idea, framed."""
    return f"Idea: {prompt.strip()}\nPrompt:"


def strip_thinking(text: str) -> str:
    """The answer after a ``</think>`` block, if the model wrote one."""
    return text.split("</think>", 1)[1] if "</think>" in text else text.replace("<think>", "")


def clean(answer: str) -> str:
    """The answer as a prompt: no thinking block, bullet, quotes or control characters, one line,
    sentences capitalised."""
    text = strip_thinking(answer).strip()
    text = re.sub(r"^(?:[-•]\s+|prompt:\s*)", "", text, flags=re.IGNORECASE).strip().strip("\"'").strip()
    text = " ".join("".join(c for c in text if c.isprintable() or c.isspace()).split())  # one printable line
    return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def rejection(text: str, category: str) -> str | None:
    """Why an answer is written again (None: it is fine): the official artifacts."""
    if _MARKUP.search(text):
        return "markup"
    if category in INSTRUMENTAL and _VOCALS.search(text):
        return "vocals"
    if _LENGTH.search(text) is None:
        return "no length"
    if len(text.split()) > MAX_WORDS:
        return "too long"
    return None


def split_length(text: str) -> tuple[str, float | None]:
    """``"... Length: 12 seconds"`` -> ``("...", 12.0)``; no final length -> ``(text, None)``."""
    m = _LENGTH.search(text)
    if m is None:
        return text, None
    return text[:m.start()].rstrip(" ,;"), float(m.group(1))


def cap_duration(seconds: float, max_duration: float) -> float:
    """``seconds`` within ``[MIN_SECONDS, max_duration]`` (the cap rounded down to 0.01 s, so SA3
    Text Encode's check of the model's maximum accepts it)."""
    top = checks.floor_to(max_duration)
    top = top if top > 0 else max_duration
    return min(max(seconds, min(MIN_SECONDS, top)), top)


def with_tags(text: str, category: str) -> str:
    """The category's tags in front (unless the answer starts with tags of its own)."""
    if text.lower().startswith("tracktype:"):
        return text
    return PREFIXES[category] + text


def example(category: str, seed: int, max_duration: float) -> Suggestion:
    """One of our example prompts for an empty idea (``auto``: music), picked by ``seed``."""
    chosen = "music" if category == "auto" else category
    text, seconds = random.Random(seed).choice(EXAMPLES[chosen])
    return Suggestion(with_tags(text.strip(), chosen), cap_duration(float(seconds), max_duration), chosen, 0, True)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Draws seeded by ``seed`` on ``device``'s generator (and the CPU's), the caller's random state
    restored afterwards (``torch.manual_seed`` would also queue a seed for every CUDA device)."""
    kind = torch.device(device).type
    accelerator = kind in ("cuda", "mps")
    devices = [torch.device(device).index or 0] if accelerator else []
    with torch.random.fork_rng(devices=devices, device_type=kind if accelerator else "cuda"):
        torch.default_generator.manual_seed(seed)
        if kind == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        elif kind == "mps":
            torch.mps.manual_seed(seed)
        yield


def suggest(model: PromptModel | None, prompt: str, category: str = "auto", *, seed: int = 0,
            max_duration: float = checks.MAX_SECONDS, max_attempts: int = MAX_ATTEMPTS,
            check_interrupt: Callable[[], None] | None = None) -> Suggestion:
    """A full prompt and duration for ``prompt`` (see the module docstring for the steps). ``model``
    may be None for an empty idea, which needs no model. ``check_interrupt`` is called before each
    answer (a host's cancel button raises there)."""
    check_idea(prompt)
    checks.check_choice("category", category, CATEGORIES)
    checks.check_number("seed", seed, 0, checks.MAX_SEED, integer=True)
    checks.check_number("max_duration", max_duration, 0, lo_open=True, unit="seconds")
    checks.check_number("max_attempts", max_attempts, 1, 100, integer=True)
    if not prompt.strip():
        return example(category, seed, max_duration)
    if model is None:
        raise ValueError("Stable Audio 3: the prompt assistant needs a language model for a non-empty prompt.")
    before = check_interrupt or (lambda: None)
    with seeded(seed, model.device):
        before()
        chosen = classify(model, prompt) if category == "auto" else category
        for attempt in range(1, max_attempts + 1):
            before()
            text = clean(model.complete(INSTRUCTIONS[chosen], request(prompt), MAX_NEW_TOKENS, TEMPERATURE))
            reason = rejection(text, chosen)
            if reason is None:
                break
            logger.info("Stable Audio 3 prompt assistant: try %d of %d written again (%s): %r", attempt, max_attempts,
                        reason, text)
    return finish(text, prompt, chosen, max_duration, attempt, accepted=reason is None)


def finish(text: str, prompt: str, category: str, max_duration: float, attempts: int, accepted: bool) -> Suggestion:
    """The last answer as a Suggestion: markup removed, length split off (the category's typical
    length when it has none), tags in front; the idea itself if nothing usable is left."""
    body, seconds = split_length(_MARKUP.sub("", text).strip())
    body = " ".join(body.split()) or " ".join(prompt.split())
    seconds = TYPICAL_SECONDS[category] if seconds is None else seconds
    return Suggestion(with_tags(body, category), cap_duration(seconds, max_duration), category, attempts, accepted)

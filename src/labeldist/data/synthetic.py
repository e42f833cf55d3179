"""A synthetic subjective multi-label task with simulated annotators (the embedded default dataset).

Each example has latent per-label intensities in [0, 1]: usually one to three labels are active,
some strongly (0.6-0.95), some ambiguously (0.25-0.6); a share of examples has none; every inactive
label keeps a small background intensity (0-0.08, scaled by 7 / L beyond 7 labels). The text is a short
English-like sentence (8-20 words) whose cue words reflect the intensities: an active label contributes
a clause with one cue word and a weak or neutral modifier ("slightly hopeful") or, when strong, two cue
words and a strong modifier ("very happy and cheerful"). 3-5 simulated annotators (config `annotators`) each
vote every label on with probability equal to its intensity, so p_ref is spread and its expected
value is known (kept in the record as `intensity`). Gold = labels with vote share >= 0.5.

Many labels (config `synthetic.labels` from `many_label_names(n)`, e.g. config/many_labels.yaml): two-word
label names ("quiet relief", "civic pride") that tokenizers split into several tokens and whose first words
are shared, so first-token label distributions collide and whole-label scoring matters. Labels never seen
in training: config `unseen_labels: N` makes the last N labels of the label order absent from the train
split (never chosen as active there, background intensity 0, so no annotator votes them, no cue words,
never gold); dev and test keep them. Texts with several multi-word cues may run past 20 words.

Hand-written: no library generates such data. Deterministic for a seed (numpy Generator per split).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DataError
from .records import SPLITS, Example, LabelledData, Origin, example_from_annotations

# Cue words of the study's emotion labels (GoEmotions clusters) and a few common others.
CUES: dict[str, list[str]] = {
    "joy": ["happy", "cheerful", "delighted", "glad", "joyful", "laughing"],
    "optimism": ["hopeful", "optimistic", "confident", "eager", "upbeat", "encouraged"],
    "admiration": ["impressed", "grateful", "proud", "admiring", "respectful", "thankful"],
    "surprise": ["surprised", "shocked", "astonished", "stunned", "puzzled", "startled"],
    "fear": ["afraid", "scared", "nervous", "worried", "anxious", "terrified"],
    "sadness": ["sad", "unhappy", "lonely", "heartbroken", "gloomy", "tearful"],
    "anger": ["angry", "furious", "annoyed", "irritated", "outraged", "mad"],
    "love": ["loving", "tender", "adoring", "affectionate", "fond", "smitten"],
    "disgust": ["disgusted", "repulsed", "sickened", "grossed", "revolted", "nauseated"],
    "trust": ["trusting", "assured", "secure", "reliant", "certain", "faithful"],
    "anticipation": ["expectant", "waiting", "ready", "restless", "watchful", "prepared"],
    "pessimism": ["doubtful", "hopeless", "bleak", "cynical", "discouraged", "defeated"],
}
# Spare cue sets for labels without their own entry, assigned in label order.
SPARE_CUES: list[list[str]] = [
    ["calm", "relaxed", "peaceful", "serene"],
    ["bored", "weary", "listless", "drained"],
    ["curious", "intrigued", "wondering", "inquisitive"],
    ["guilty", "ashamed", "regretful", "sorry"],
    ["jealous", "envious", "resentful", "bitter"],
    ["excited", "thrilled", "energized", "elated"],
    ["confused", "baffled", "lost", "perplexed"],
    ["lonely", "isolated", "forgotten", "abandoned"],
]
SUBJECTS = ["the meeting", "my brother", "our trip", "the new phone", "this weather", "her reply",
            "the final exam", "that old song", "the long drive", "his decision", "the news today",
            "my neighbor", "the game last night", "this little town", "the letter", "our dinner"]
VERBS = ["made me feel", "left me", "had me", "got me feeling", "kept me", "made everyone"]
NEUTRAL = ["happened on tuesday", "was about the usual schedule", "started at noon",
           "took place downtown", "was mentioned in passing", "came up during lunch"]
CONNECTIVES = ["and", "but also", "and then", "while"]
FILLER = ["after work", "this week", "at home", "with friends", "on the bus", "again", "today",
          "for a while", "as usual", "in town", "last weekend", "at the office", "once more", "tonight"]
WEAK = ["slightly", "somewhat", "mildly", "faintly"]
MEDIUM = ["rather", "fairly", "quite", "kind of"]
STRONG = ["very", "truly", "deeply", "really"]

# Words of the many-label names (`many_label_names`): adjective + noun, 20 x 15 = 300 distinct names.
NAME_ADJECTIVES = ["quiet", "civic", "bitter", "gentle", "sudden", "shared", "private", "restless", "tender",
                   "fierce", "hollow", "warm", "distant", "nervous", "proud", "weary", "playful", "solemn",
                   "curious", "stubborn"]
NAME_NOUNS = ["relief", "pride", "worry", "longing", "delight", "regret", "awe", "doubt", "resolve", "unease",
              "hope", "grief", "wonder", "guilt", "calm"]

BACKGROUND_MAX, BACKGROUND_LABELS = 0.08, 7  # background intensity bound, kept for up to 7 labels
N_ACTIVE_P = [0.15, 0.40, 0.30, 0.15]  # P(0, 1, 2, 3 active labels)
P_STRONG = 0.6
MIN_WORDS, MAX_WORDS = 8, 20


def many_label_names(n: int) -> list[str]:
    """Return `n` distinct two-word label names (adjective + noun, at most 300), deterministic: name i
    pairs adjective a = i mod 20 with noun (i // 20 + a) mod 15, so consecutive labels differ in both
    words and every adjective starts several names (shared first tokens)."""
    n_adj, n_noun = len(NAME_ADJECTIVES), len(NAME_NOUNS)
    if not 1 <= n <= n_adj * n_noun:
        raise ValueError(f"many_label_names: n must be in 1..{n_adj * n_noun}, got {n}")
    return [f"{NAME_ADJECTIVES[i % n_adj]} {NAME_NOUNS[(i // n_adj + i % n_adj) % n_noun]}" for i in range(n)]


def cue_words(labels: Sequence[str]) -> dict[str, list[str]]:
    """Return each label's cue vocabulary: its own entry in CUES, else a spare set, else the label
    name itself (lower-cased, with two derived forms) once the spare sets run out."""
    out: dict[str, list[str]] = {}
    spare = iter(SPARE_CUES)
    for lab in labels:
        key = lab.lower()
        if key in CUES:
            out[lab] = CUES[key]
        else:
            out[lab] = next(spare, None) or [key, f"{key}-like", f"quite {key}"]
    return out


def _intensities(rng: np.random.Generator, n_labels: int, weights: np.ndarray,
                 absent: Sequence[int] = ()) -> np.ndarray:
    """Latent intensities of one example: background noise plus 0-3 active labels; `absent` labels
    (weight 0 in `weights`) get intensity 0. The background is uniform on [0, 0.08 * min(1, 7 / L)]: an
    annotator's expected number of noise votes stays that of 7 labels however large L is."""
    inten = rng.uniform(0.0, BACKGROUND_MAX * min(1.0, BACKGROUND_LABELS / n_labels), size=n_labels)
    k = min(int(rng.choice(len(N_ACTIVE_P), p=N_ACTIVE_P)), n_labels - len(absent))
    if k:
        active = rng.choice(n_labels, size=k, replace=False, p=weights)
        strong = rng.random(k) < P_STRONG
        inten[active] = np.where(strong, rng.uniform(0.6, 0.95, size=k), rng.uniform(0.25, 0.6, size=k))
    if len(absent):
        inten[list(absent)] = 0.0
    return inten


def _clause(rng: np.random.Generator, cues: list[str], intensity: float) -> list[str]:
    """Words that express one label at `intensity`: modifier strength and cue count grow with it."""
    if intensity >= 0.65:
        a, b = rng.choice(len(cues), size=2, replace=False)
        return [str(rng.choice(STRONG)), cues[a], "and", cues[b]]
    mods = WEAK if intensity < 0.4 else MEDIUM
    return [str(rng.choice(mods)), cues[int(rng.integers(len(cues)))]]


def _text(rng: np.random.Generator, labels: Sequence[str], cues: Mapping[str, list[str]],
          inten: np.ndarray) -> str:
    """An 8-20 word sentence carrying cue words for every active label (intensity >= 0.2)."""
    active = [i for i in np.argsort(-inten) if inten[i] >= 0.2]
    subject = str(rng.choice(SUBJECTS)).split()
    if not active:
        words = subject + str(rng.choice(NEUTRAL)).split()
    else:
        verb = str(rng.choice(VERBS)).split()
        clauses = [" ".join(_clause(rng, cues[labels[i]], float(inten[i]))).split()
                   for i in (active[j] for j in rng.permutation(len(active)))]
        joins = [str(rng.choice(CONNECTIVES)).split() for _ in clauses[1:]]
        n_words = len(verb) + sum(map(len, clauses)) + sum(map(len, joins))
        if len(subject) + n_words > MAX_WORDS:  # keep every cue word: shorten the frame instead
            joins = [["and"] for _ in joins]
            n_words = len(verb) + sum(map(len, clauses)) + len(joins)
            if len(subject) + n_words > MAX_WORDS:
                subject = ["it"]
        words = subject + verb + clauses[0]
        for join, clause in zip(joins, clauses[1:]):
            words += join + clause
    extra = int(rng.integers(0, 2))
    while len(words) < MIN_WORDS or extra > 0:
        phrase = FILLER[int(rng.integers(len(FILLER)))].split()
        if len(words) + len(phrase) > MAX_WORDS:
            break
        words += phrase
        extra -= 1
    return " ".join(words)


def generate_split(labels: Sequence[str], n: int, annotators: Sequence[int], seed: int, split: str,
                   absent: Sequence[str] = ()) -> list[Example]:
    """Return `n` synthetic examples of one split, ids `syn-{split}-{i:05d}`, deterministic per
    (seed, split): latent intensities, a cue-word text, simulated annotator votes and p_ref. Labels in
    `absent` have intensity 0 throughout (never voted, never gold, no cue words)."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    cues = cue_words(labels)
    n_labels = len(labels)
    weights = 1.0 / np.sqrt(np.arange(1, n_labels + 1))  # mildly imbalanced label frequencies
    absent_idx = [labels.index(lab) for lab in absent]
    weights[absent_idx] = 0.0
    weights = weights / weights.sum()
    lo, hi = int(annotators[0]), int(annotators[1])
    out = []
    for i in range(n):
        inten = _intensities(rng, n_labels, weights, absent_idx)
        text = _text(rng, labels, cues, inten)
        n_ann = int(rng.integers(lo, hi + 1))
        votes = rng.random((n_ann, n_labels)) < inten[None, :]
        anns = [[labels[j] for j in range(n_labels) if row[j]] for row in votes]
        ex_id = f"syn-{split}-{i:05d}"
        ex = example_from_annotations(ex_id, text, anns, labels, Origin("synthetic", None))
        ex.extra["intensity"] = {lab: round(float(v), 4) for lab, v in zip(labels, inten)}
        out.append(ex)
    return out


def unseen_labels(labels: Sequence[str], n_unseen: int) -> list[str]:
    """Return the labels held out of the train split for config `unseen_labels: n_unseen`: the last
    `n_unseen` of the label order (the least frequent under the generator's label weights)."""
    return list(labels[len(labels) - n_unseen:]) if n_unseen > 0 else []


def load_synthetic(name: str, cfg: Mapping[str, Any]) -> LabelledData:
    """Return the synthetic dataset described by `cfg["synthetic"]` (labels, n_train, n_dev, n_test,
    annotators [min, max], seed, unseen_labels: how many of the last labels the train split lacks)."""
    syn = cfg["synthetic"]
    labels = list(syn["labels"])
    annotators = syn["annotators"]
    if not 1 <= annotators[0] <= annotators[1]:
        raise DataError(f"datasets.{name}.synthetic", f"annotators must be [min, max] with 1 <= min <= max, "
                        f"got {annotators}", field="annotators")
    n_unseen = int(syn.get("unseen_labels", 0))
    if not 0 <= n_unseen <= len(labels) - 1:
        raise DataError(f"datasets.{name}.synthetic", f"unseen_labels must be in 0..{len(labels) - 1} "
                        f"(at least one label must occur in training), got {n_unseen}", field="unseen_labels")
    held_out = unseen_labels(labels, n_unseen)
    seed = int(syn["seed"])
    sizes = {"train": syn["n_train"], "dev": syn["n_dev"], "test": syn["n_test"]}
    splits = {s: generate_split(labels, int(sizes[s]), annotators, seed, s,
                                absent=held_out if s == "train" else ()) for s in SPLITS}
    notes = ["synthetic: `intensity` holds each label's latent vote probability"]
    if held_out:
        notes.append(f"synthetic: {len(held_out)} labels never occur in the train split (intensity 0 there, "
                     f"no votes; dev and test keep them): {', '.join(held_out)}")
    return LabelledData(name, "synthetic", labels, "multilabel", "annotators", splits, notes=notes)

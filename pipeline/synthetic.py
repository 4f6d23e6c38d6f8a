"""An offline family of two artificial languages, labelled sets for all four tasks, and a small teacher.

Two related languages share function words, names and most roots but differ in affixes, word order
and part of the lexicon:

- ``alva`` (the target language): nouns and verbs are bare roots, and every root serves as both
  (``le doma`` "the house" / ``lo doma`` "he houses"), so a word's part of speech follows from its
  context only; adjectives take ``-ik`` and precede the noun.
- ``borsk`` (the second language, present only in the teacher's pretraining text): nouns take ``-o``,
  verbs ``ma-``, adjectives ``-ul`` and follow the noun; a third of its roots are its own.

Labelled sets (all in alva) whose labels follow from the text:

- pos (CoNLL-U, UPOS): from the grammar; a bare word after a determiner or adjective is a NOUN,
  elsewhere a VERB.
- ner (column file ``token TAG``): names from name lists with B-/I- tags; some names are both a
  person and a place, and the place reading is the one after the preposition ``di``.
- topic (TSV with header ``id category text``): sentences draw nouns and verbs from one topic's
  vocabulary.
- sentiment (header-less CSV ``label,text``): one polar adjective, flipped by the negation ``nu`` (a
  third of the examples): a bag of words stops at about two in three. Which adjectives are positive
  is learnt in pretraining: in the unlabelled text a polar adjective comes with ``bene`` or ``male``
  (never in the labelled set), so a pretrained model knows the polarity of adjectives that a small
  labelled set never shows, and a random one does not.

The teacher's tokenizer is a Unigram vocabulary trained on both languages, completed to the exact size
`teacher_config` states (see `_exact_size`); ``borsk`` words split into shared root + own affix
(``▁puva`` ``o``), so trimming the vocabulary to alva has pieces to drop.

`teacher_config` is importable without torch (the dry run reads it); `ensure` builds everything once
under ``root/name`` (file-locked) and trains the teacher with `pipeline.vocab.train_unigram_tokenizer`
and `pipeline.adapt.pretrain_from_scratch`.

Command line: ``python -m pipeline synthetic --out ROOT [--name demo] [--no-teacher]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UsageError

__all__ = [
    "PARTS",
    "Language",
    "add_arguments",
    "ensure",
    "generate",
    "main",
    "resolve",
    "teacher_config",
]

log = logging.getLogger(__name__)

PARTS = ("teacher", "corpus", "heldout", "sentiment", "topic", "ner", "pos")
TOPICS = ("sport", "food", "politics", "health", "travel")


@dataclass(frozen=True)
class _Settings:
    # Bumped whenever the generated text or labels change: a build of another version is rebuilt.
    version: int = 3
    seed: int = 13
    layers: int = 4
    hidden: int = 128
    heads: int = 4
    ffn: int = 512
    vocab_size: int = 1000
    max_len: int = 64
    corpus_lines: int = 12_000  # per language
    heldout_lines: int = 500
    sizes: tuple[tuple[str, tuple[int, int, int]], ...] = (
        ("sentiment", (600, 200, 200)), ("topic", (500, 100, 100)), ("ner", (300, 200, 200)),
        ("pos", (800, 200, 200)),
    )
    pretrain_steps: int = 400
    pretrain_batch: int = 64
    pretrain_lr: float = 1e-3


_NAMES = {"demo": _Settings()}


def _settings(name: str) -> _Settings:
    if name not in _NAMES:
        raise UsageError(f"unknown synthetic language family {name!r}: choose one of {', '.join(_NAMES)}")
    return _NAMES[name]


def teacher_config(name: str = "demo") -> dict:
    """The ``config.json`` values of the teacher `ensure` builds (XLM-R architecture), torch-free."""
    s = _settings(name)
    return {
        "architectures": ["XLMRobertaForMaskedLM"],
        "model_type": "xlm-roberta",
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "intermediate_size": s.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": s.max_len + 2,  # XLM-R positions start after the padding index
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }


# ---------------------------------------------------------------- the languages

_CONSONANTS = "pbtdkgmnlrsvzf"
_VOWELS = "aeiou"
_DETERMINERS = ("le", "un")
_PRONOUNS = ("mi", "tu", "lo", "noi")
_NEGATION = "nu"
_PREPOSITIONS = ("di", "ko")  # "di" + place name = location
_ADVERBS = ("oggi", "ancor", "sempre", "presto", "tardi", "spesso")
_POLAR_ADVERBS = {"positive": "bene", "negative": "male"}  # unlabelled text only: where polarity is learnt
_CONJUNCTION = "e"
_ORG_HEADS = ("Banka", "Klubo", "Partia", "Skola")
_FUNCTION_WORDS = set(_DETERMINERS + _PRONOUNS + _PREPOSITIONS + _ADVERBS + (_NEGATION, _CONJUNCTION)
                      + tuple(_POLAR_ADVERBS.values()))


@dataclass(frozen=True)
class Language:
    """One language of the family: lexicon (surface forms) and morphology."""

    name: str
    nouns: tuple[str, ...]  # general nouns
    verbs: tuple[str, ...]
    adjectives: tuple[str, ...]  # neutral
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    topic_nouns: dict
    topic_verbs: dict
    adjective_first: bool

    def noun_phrase(self, rng: random.Random, noun: str, adjective: str | None = None) -> list[tuple[str, str]]:
        words = [(rng.choice(_DETERMINERS), "DET")]
        if adjective is None:
            return words + [(noun, "NOUN")]
        pair = [(adjective, "ADJ"), (noun, "NOUN")]
        return words + (pair if self.adjective_first else pair[::-1])


class _Family:
    """Roots, names and both languages, all drawn from one seeded generator."""

    def __init__(self, seed: int):
        rng = random.Random(f"lexicon:{seed}")
        used = set(_FUNCTION_WORDS)

        def roots(n: int) -> list[str]:
            out = []
            while len(out) < n:
                root = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.choice((2, 2, 3))))
                if root not in used:
                    used.add(root)
                    out.append(root)
            return out

        shared = {
            "both": roots(40), "nouns": roots(20), "verbs": roots(12), "adjectives": roots(16),
            "positive": roots(20), "negative": roots(20),
            **{f"tn:{t}": roots(12) for t in TOPICS}, **{f"tv:{t}": roots(6) for t in TOPICS},
        }
        # borsk keeps two thirds of the roots and has its own for the rest
        own = {key: [r if rng.random() < 0.67 else roots(1)[0] for r in values] for key, values in shared.items()}

        def name(n: int) -> list[str]:
            return [r.capitalize() for r in roots(n)]

        self.first_names, self.last_names = name(30), name(20)
        self.places = name(20)
        self.person_or_place = name(10)  # both readings; context decides
        self.org_names = name(12)
        self.alva = Language(
            "alva",
            # every bare root is both a noun and a verb: context alone tells them apart
            nouns=tuple(shared["both"] + shared["nouns"] + shared["verbs"]),
            verbs=tuple(shared["both"] + shared["nouns"] + shared["verbs"]),
            adjectives=tuple(r + "ik" for r in shared["adjectives"]),
            positive=tuple(r + "ik" for r in shared["positive"]), negative=tuple(r + "ik" for r in shared["negative"]),
            topic_nouns={t: tuple(shared[f"tn:{t}"] + shared[f"tv:{t}"]) for t in TOPICS},
            topic_verbs={t: tuple(shared[f"tv:{t}"] + shared[f"tn:{t}"]) for t in TOPICS},
            adjective_first=True,
        )
        self.borsk = Language(
            "borsk",
            nouns=tuple(r + "o" for r in own["both"] + own["nouns"]), verbs=tuple("ma" + r for r in own["both"] + own["verbs"]),
            adjectives=tuple(r + "ul" for r in own["adjectives"]),
            positive=tuple(r + "ul" for r in own["positive"]), negative=tuple(r + "ul" for r in own["negative"]),
            topic_nouns={t: tuple(r + "o" for r in own[f"tn:{t}"]) for t in TOPICS},
            topic_verbs={t: tuple("ma" + r for r in own[f"tv:{t}"]) for t in TOPICS},
            adjective_first=False,
        )

    # ------------------------------------------------------------ names (token, upos, ner)

    def person(self, rng: random.Random) -> list[tuple[str, str, str]]:
        first = rng.choice(self.first_names + self.person_or_place * 3)
        words = [(first, "PROPN", "B-PER")]
        if rng.random() < 0.5:
            words.append((rng.choice(self.last_names), "PROPN", "I-PER"))
        return words

    def place(self, rng: random.Random) -> list[tuple[str, str, str]]:
        words = [(rng.choice(self.places + self.person_or_place * 3), "PROPN", "B-LOC")]
        if rng.random() < 0.25:
            words.append((rng.choice(self.places), "PROPN", "I-LOC"))
        return words

    def organisation(self, rng: random.Random) -> list[tuple[str, str, str]]:
        return [(rng.choice(_ORG_HEADS), "PROPN", "B-ORG"), (rng.choice(self.org_names), "PROPN", "I-ORG")]

    # ------------------------------------------------------------ sentences

    def clause(
        self, lang: Language, rng: random.Random, *, topic: str | None = None, polar: str | None = None,
        negate: bool = False, names: float = 0.3,
    ) -> list[tuple[str, str, str]]:
        """One clause: subject [nu] verb object [place or prepositional phrase] [adverb]."""

        def noun() -> str:
            return rng.choice(lang.topic_nouns[topic]) if topic and rng.random() < 0.7 else rng.choice(lang.nouns)

        def np(adjective: str | None = None) -> list[tuple[str, str, str]]:
            return [(w, t, "O") for w, t in lang.noun_phrase(rng, noun(), adjective)]

        neutral = None if polar is not None else (rng.choice(lang.adjectives) if rng.random() < 0.3 else None)
        roll = rng.random()
        if roll < names:
            words = self.person(rng)
        elif roll < names + 0.25:
            words = [(rng.choice(_PRONOUNS), "PRON", "O")]
        else:
            words = np(neutral)
        if negate:
            words.append((_NEGATION, "PART", "O"))
        verb = rng.choice(lang.topic_verbs[topic]) if topic and rng.random() < 0.7 else rng.choice(lang.verbs)
        words.append((verb, "VERB", "O"))
        roll = rng.random()
        if polar is not None:
            words += np(polar)
        elif roll < names * 0.5:
            words += self.person(rng)
        elif roll < names:
            words += self.organisation(rng)
        else:
            words += np(rng.choice(lang.adjectives) if rng.random() < 0.3 else None)
        roll = rng.random()
        if roll < names * 1.5:
            words += [("di", "ADP", "O")] + self.place(rng)
        elif roll < 0.6:
            words += [(rng.choice(_PREPOSITIONS), "ADP", "O")] + np()
        if rng.random() < 0.2:
            words.append((rng.choice(_ADVERBS), "ADV", "O"))
        return words

    def sentence(self, lang: Language, rng: random.Random, **kwargs) -> list[tuple[str, str, str]]:
        return self.clause(lang, rng, **kwargs) + [(".", "PUNCT", "O")]

    def corpus_sentence(self, lang: Language, rng: random.Random) -> list[tuple[str, str, str]]:
        """Unlabelled text: every construction the tasks use, in one mix."""

        def one() -> list[tuple[str, str, str]]:
            polar = rng.choice(lang.positive + lang.negative) if rng.random() < 0.3 else None
            topic = rng.choice(TOPICS) if rng.random() < 0.5 else None
            words = self.clause(lang, rng, topic=topic, polar=polar, negate=rng.random() < 0.3)
            if polar is not None and rng.random() < 0.8:
                words.append((_POLAR_ADVERBS["positive" if polar in lang.positive else "negative"], "ADV", "O"))
            return words

        words = one()
        if rng.random() < 0.25:
            words += [(_CONJUNCTION, "CCONJ", "O")] + one()
        return words + [(".", "PUNCT", "O")]


def _text(words) -> str:
    return " ".join(w for w, _, _ in words)


# ---------------------------------------------------------------- labelled sets


def _sentiment(family: _Family, rng: random.Random, n: int) -> list[tuple[str, str]]:
    rows = []
    lang = family.alva
    for i in range(n):
        # Balanced, and negated in a third of the examples: the polar word alone is right two times
        # in three (what a bag of words reaches), and only a model that reads "nu" gets the rest.
        positive, negate = i % 2 == 0, (i // 2) % 3 == 0
        polar = rng.choice(lang.positive if positive else lang.negative)
        words = family.sentence(lang, rng, polar=polar, negate=negate, names=0.2)
        rows.append(("1" if positive != negate else "0", _text(words)))
    rng.shuffle(rows)
    return rows


def _topic(family: _Family, rng: random.Random, n: int) -> list[tuple[str, str]]:
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        while True:
            words = family.sentence(family.alva, rng, topic=topic, names=0.15)
            if _topic_of(family, [w for w, _, _ in words]) == topic:
                break
        rows.append((topic, _text(words)))
    rng.shuffle(rows)
    return rows


def _topic_of(family: _Family, tokens: list[str]) -> str | None:
    """The single topic whose vocabulary occurs in ``tokens`` (at least twice), else None."""
    lang = family.alva
    counts = {t: sum(w in lang.topic_nouns[t] or w in lang.topic_verbs[t] for w in tokens) for t in TOPICS}
    present = [t for t, c in counts.items() if c]
    return present[0] if len(present) == 1 and counts[present[0]] >= 2 else None


def _tagged(family: _Family, rng: random.Random, n: int, names: float) -> list[list[tuple[str, str, str]]]:
    return [family.sentence(family.alva, rng, negate=rng.random() < 0.2, names=names,
                            topic=rng.choice(TOPICS) if rng.random() < 0.3 else None) for _ in range(n)]


def _write_split_files(out: Path, task: str, splits: dict[str, list]) -> None:
    folder = out / task
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        if task == "sentiment":
            import csv

            with (folder / f"{split}.csv").open("w", encoding="utf-8", newline="") as handle:
                csv.writer(handle, lineterminator="\n").writerows(rows)
        elif task == "topic":
            lines = ["id\tcategory\ttext"] + [f"{i}\t{label}\t{text}" for i, (label, text) in enumerate(rows, 1)]
            (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        elif task == "ner":
            blocks = ["\n".join(f"{w} {tag}" for w, _, tag in words) for words in rows]
            (folder / f"{split}.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
        else:
            blocks = []
            for number, words in enumerate(rows, 1):
                lines = [f"# sent_id = {split}-{number}", f"# text = {_text(words)}"]
                lines += [f"{i}\t{w}\t_\t{upos}\t_\t_\t_\t_\t_\t_" for i, (w, upos, _) in enumerate(words, 1)]
                blocks.append("\n".join(lines))
            (folder / f"{split}.conllu").write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")


def generate(out: str | Path, name: str = "demo") -> dict[str, str]:
    """Write the corpora and the four labelled sets (no teacher) to ``out``; deterministic per name.

    Returns:
        paths of ``corpus`` (alva text for distillation), ``heldout``, ``corpus-borsk``,
        ``teacher-text`` (both languages, what the teacher trains on) and the four task folders.
    """
    s = _settings(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    family = _Family(s.seed)
    paths = {}
    for key, lang, count in (("corpus", family.alva, s.corpus_lines), ("heldout", family.alva, s.heldout_lines),
                             ("corpus-borsk", family.borsk, s.corpus_lines)):
        rng = random.Random(f"{key}:{s.seed}")
        lines = [_text(family.corpus_sentence(lang, rng)) for _ in range(count)]
        path = out / f"{key}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths[key] = str(path)
    for task, sizes in s.sizes:
        splits = {}
        for split, n in zip(("train", "dev", "test"), sizes):
            rng = random.Random(f"{task}:{split}:{s.seed}")
            if task == "sentiment":
                splits[split] = _sentiment(family, rng, n)
            elif task == "topic":
                splits[split] = _topic(family, rng, n)
            else:
                splits[split] = _tagged(family, rng, n, names=0.6 if task == "ner" else 0.3)
        _write_split_files(out, task, splits)
        paths[task] = str(out / task)
    return paths


# ---------------------------------------------------------------- the teacher


def build_teacher(paths: dict[str, str], out: str | Path, name: str = "demo", *, device=None) -> dict:
    """Train the tokenizer and pretrain the teacher on both languages' text; saves an HF dir to ``out``."""
    from pipeline import modeling
    from pipeline.adapt import pretrain_from_scratch
    from pipeline.config import AdaptConfig
    from pipeline.vocab import train_unigram_tokenizer

    s = _settings(name)
    started = time.perf_counter()
    texts = []
    for key in ("corpus", "corpus-borsk"):
        texts += Path(paths[key]).read_text(encoding="utf-8").splitlines()
    random.Random(f"mix:{s.seed}").shuffle(texts)
    heldout = Path(paths["heldout"]).read_text(encoding="utf-8").splitlines()
    tokenizer = _exact_size(train_unigram_tokenizer(texts, s.vocab_size), texts, s.vocab_size)
    config = teacher_config(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    cfg = AdaptConfig(steps=s.pretrain_steps, lr=s.pretrain_lr, batch_size=s.pretrain_batch, max_length=s.max_len,
                      warmup_steps=s.pretrain_steps // 10, eval_every=s.pretrain_steps // 4, seed=s.seed, bf16=False)
    model, tokenizer, metrics = pretrain_from_scratch(out, tokenizer, texts, heldout, cfg, device=device)
    modeling.save(model, tokenizer, out)
    metrics = {**metrics, "build_seconds": round(time.perf_counter() - started, 1)}
    modeling.write_metrics(out, metrics)
    return metrics


def _exact_size(tokenizer, texts: list[str], size: int):
    """Complete a trained Unigram vocabulary to exactly ``size`` pieces, so `teacher_config` can state it.

    The `tokenizers` Unigram trainer seeds its pieces with substrings that repeat across the distinct
    words, so a frequent word that is not part of another word (``un``) never becomes a piece, and a
    small lexicon leaves the trainer short of the size asked for. Missing whole words are added, most
    frequent first, with their unigram log-probability as score; any remaining room goes to frequent
    substrings scored below every trained piece (rarely chosen, but they keep the size exact).
    """
    import math
    from collections import Counter

    from transformers import XLMRobertaTokenizer

    from pipeline.vocab import unigram_pieces

    pieces = unigram_pieces(tokenizer)
    if len(pieces) > size:
        raise RuntimeError(f"tokenizer has {len(pieces)} pieces, more than {size}")
    known = {piece for piece, _ in pieces}
    words = Counter("\u2581" + word for line in texts for word in line.split())
    total = sum(words.values())
    room = size - len(pieces)
    added = [(w, math.log(c / total)) for w, c in sorted(words.items(), key=lambda i: (-i[1], i[0])) if w not in known]
    added = added[:room]
    known |= {w for w, _ in added}
    substrings: Counter[str] = Counter()
    for word, count in words.items():
        for length in range(2, min(len(word), 8) + 1):
            for start in range(len(word) - length + 1):
                substrings[word[start : start + length]] += count
    floor = min(score for _, score in pieces[4:-1] + added)
    rest = sorted((c for c in substrings if c not in known), key=lambda c: (-substrings[c], c))[: room - len(added)]
    if len(added) + len(rest) < room:
        raise RuntimeError(f"cannot complete the vocabulary to {size} pieces")
    completed = pieces[:-1] + added + [(c, floor - 1.0 - i * 1e-3) for i, c in enumerate(rest)] + [pieces[-1]]
    return XLMRobertaTokenizer(vocab=completed)


def ensure(name: str, root: str | Path, *, teacher: bool = True) -> dict[str, str]:
    """Build the family ``name`` under ``root/name`` once (file-locked) and return its paths.

    Returns:
        ``{"teacher", "corpus", "heldout", "sentiment", "topic", "ner", "pos"}`` (and ``corpus-borsk``);
        task values are folders in the formats `pipeline.data` reads. ``teacher=False`` skips the model
        (and leaves ``teacher`` out) for quick data-only use.
    """
    from filelock import FileLock

    _settings(name)
    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    with FileLock(str(root / f".{name}.lock")):
        # Holding the lock, nobody else is building: leftovers of a crashed build can go.
        for stale in [*root.glob(f".{name}.tmp-*"), *final.glob(".teacher.tmp-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        version = str(_settings(name).version)
        if not _stamped(final / ".data-complete", version):
            tmp = root / f".{name}.tmp-{os.getpid()}"
            generate(tmp, name)
            (tmp / ".data-complete").write_text(version)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        if teacher and not _stamped(final / ".complete", version):
            log.info("synthetic %s: pretraining the teacher", name)
            tmp = final / f".teacher.tmp-{os.getpid()}"
            build_teacher(_paths(final), tmp, name)
            shutil.rmtree(final / "teacher", ignore_errors=True)
            os.replace(tmp, final / "teacher")
            (final / ".complete").write_text(version)
    paths = _paths(final)
    if not teacher and not _stamped(final / ".complete", version):
        paths.pop("teacher")
    return paths


def _stamped(marker: Path, version: str) -> bool:
    """Whether ``marker`` exists and names this version of the generator (older builds had empty markers)."""
    return marker.is_file() and marker.read_text().strip() == version


def _paths(folder: Path) -> dict[str, str]:
    names = {"teacher": "teacher", "corpus": "corpus.txt", "heldout": "heldout.txt",
             "corpus-borsk": "corpus-borsk.txt", **{t: t for t in ("sentiment", "topic", "ner", "pos")}}
    return {key: str(folder / value) for key, value in names.items()}


def resolve(uri: str, root: str | Path) -> str:
    """The local path of ``synthetic:NAME/PART`` (building it under ``root`` first if needed)."""
    if not uri.startswith("synthetic:"):
        raise UsageError(f"{uri!r}: expected synthetic:NAME/PART")
    name, _, part = uri[len("synthetic:"):].partition("/")
    if part not in PARTS + ("corpus-borsk",):
        raise UsageError(f"{uri!r}: part must be one of {', '.join(PARTS)}")
    complete = _stamped(Path(root) / name / ".complete", str(_settings(name).version))
    return ensure(name, root, teacher=part == "teacher" or complete)[part]


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="root folder; files go to OUT/NAME")
    parser.add_argument("--name", default="demo", help="language family (default: demo)")
    parser.add_argument("--no-teacher", action="store_true", help="write the text and labelled sets only")


def main(args: argparse.Namespace) -> int:
    paths = ensure(args.name, args.out, teacher=not args.no_teacher)
    print(json.dumps(paths), flush=True)
    return 0

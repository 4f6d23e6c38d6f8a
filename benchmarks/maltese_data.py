"""The Maltese text of the benchmark: one training corpus and one held-out file, FLORES kept out.

Sources (``../shared/data/mt``, see its README): PARSEME news sentences (``raw``) and every folder of
``raw-extra`` except ``flores`` (SIB-200, the topic task, is FLORES text). Laws of Malta are 90% of
the words and one narrow domain; by default a third of their lines is kept, so news, speech and
government text are not drowned (about 2.2M words). Lines equal to any task's text (train, dev or
test) are dropped, compared without whitespace or case (`pipeline.corpus.text_key`, so a POS
sentence's tokens match the raw line they came from), and the held-out lines are a seeded sample that training never sees.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from pipeline.config import TaskSource
from pipeline.corpus import drop_texts, read_parseme, text_key
from pipeline.data import load_task

__all__ = ["prepare_text", "task_texts"]

TASKS = {"pos": "pos", "topic": "topic", "sentiment": "sentiment"}
_PLAIN = ("korpus-malti-v4.2-unseen", "ntrex128", "webnlg2023-mt", "maltese-simplification-corpus")


def _lines(mt: Path, legal_share: float, rng: random.Random) -> dict[str, list[str]]:
    extra = mt / "raw-extra"
    sources = {"parseme-news": [s for split in ("train", "test") for s in read_parseme(mt / "raw" / f"{split}.parsemetsv")]}
    for folder in _PLAIN:
        sources[folder] = [line for path in sorted((extra / folder).rglob("*.txt")) if "README" not in path.name
                           for line in path.read_text(encoding="utf-8").splitlines()]
    sources["tatoeba"] = (extra / "tatoeba-mt" / "tatoeba-test-v2021-08-07.mlt").read_text(encoding="utf-8").splitlines()
    voice = []
    for name in ("validated_sentences.tsv", "unvalidated_sentences.tsv"):
        with (extra / "common-voice-mt" / name).open(encoding="utf-8", newline="") as handle:
            voice += [row["sentence"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    sources["common-voice"] = voice
    legal = [line for path in sorted((extra / "laws-of-malta").glob("*.txt"))
             for line in path.read_text(encoding="utf-8").splitlines()]
    rng.shuffle(legal)
    sources["laws-of-malta"] = legal[: int(len(legal) * legal_share)]
    return {name: [line.strip() for line in lines if len(line.split()) >= 3] for name, lines in sources.items()}


def task_texts(mt: Path) -> dict[str, list]:
    """Every labelled input of the benchmark's tasks (train, dev and test), per task: strings for the
    classification tasks, token lists for POS."""
    texts = {}
    for task, folder in TASKS.items():
        loaded = load_task(task, TaskSource(str(mt / folder)))
        texts[task] = [x for split in (loaded.train, loaded.dev, loaded.test) for x in split.inputs]
    return texts


def prepare_text(data: Path, out: Path, *, heldout_lines: int = 2000, legal_share: float = 1 / 3,
                 seed: int = 0) -> dict:
    """Write ``out/corpus.txt`` and ``out/heldout.txt``; returns what went in (lines and words per source)
    and what was removed because a task holds it.

    Args:
        data: the shared data folder (holding ``mt/``).
        out: where the two files go.
        heldout_lines: lines sampled (seeded) as held-out text, never trained on.
        legal_share: the share of Laws of Malta lines kept.
        seed: the shuffle's seed.
    """
    mt = data / "mt"
    rng = random.Random(seed)
    sources = _lines(mt, legal_share, rng)
    by_task = task_texts(mt)
    removed: dict[str, dict[str, int]] = {}  # source -> task -> lines removed
    examples: list[dict] = []
    for name in sources:
        for task, texts in by_task.items():
            sources[name], dropped = drop_texts(sources[name], texts)
            if dropped:
                removed.setdefault(name, {})[task] = len(dropped)
                examples += [{"source": name, "task": task, "line": line} for line in dropped[:2]]
    seen, lines = set(), []
    for texts in sources.values():
        for line in texts:
            key = text_key(line)
            if key not in seen:
                seen.add(key)
                lines.append(line)
    rng.shuffle(lines)
    heldout, corpus = lines[:heldout_lines], lines[heldout_lines:]
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    (out / "heldout.txt").write_text("\n".join(heldout) + "\n", encoding="utf-8")
    return {
        "sources": {name: {"lines": len(texts), "words": sum(len(t.split()) for t in texts)} for name, texts in sources.items()},
        "corpus_lines": len(corpus), "corpus_words": sum(len(t.split()) for t in corpus),
        "heldout_lines": len(heldout), "dropped_task_texts": sum(n for per in removed.values() for n in per.values()),
        "removed_task_texts": {"by_source": removed, "examples": examples[:20]}, "legal_share": legal_share,
    }

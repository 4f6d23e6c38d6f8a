"""The model card: metadata that parses as YAML and carries dev and test results, and a body that labels
them, from a trial's result; nothing read or written."""

from __future__ import annotations

import yaml

from pipeline.card import card_data, model_card, read_front_matter

RESULT = {
    "config": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 256, "vocab_size": 500},
    "sizes": {"embeddings": 40_000, "layers": 100_000, "head": 5_000, "total": 145_000}, "params": 145_000,
    "disk_mb": 0.6,
    "stages": {"distill": {"steps": 60, "loss_end": 3.1, "heldout_loss": 3.3, "teacher_layers": [1, 3]},
               "trim_vocab": {"vocab_size": 500}},
    "settings": {"distill": {"layers": 2, "init": "stride", "lr": 5e-4}, "trim_vocab": {"vocab_size": 500}},
    "scores": {"topic": 0.61, "ner": 0.7}, "test_scores": {"topic": 0.58, "ner": 0.72},
    "tasks": {"topic": {"metric": "macro_f1", "data": "/data/topic"}, "ner": {"metric": "entity_f1", "data": "/data/ner"}},
    "latency_ms": 2.5,
}
REFERENCE = {"topic": 0.8, "test_topic": 0.79, "ner": 0.9, "test_ner": 0.88, "params": 950_000, "latency_ms": 10.0}


def test_card_of_a_trial():
    data = card_data(RESULT, name="demo-student t1", language="alva", license="mit", teacher="synthetic:demo/teacher",
                     reference=REFERENCE, latency={"runtime": "onnx-int8", "batch": 1, "seq_len": 64, "threads": 1},
                     teacher_config={"model_type": "xlm-roberta", "num_hidden_layers": 4, "hidden_size": 128,
                                     "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 66,
                                     "type_vocab_size": 1})
    text = model_card(data)
    meta = read_front_matter(text)
    assert meta == yaml.safe_load(text.split("---\n")[1])
    assert meta["language"] == ["alva"] and meta["license"] == "mit" and meta["base_model"] == "synthetic:demo/teacher"
    assert {"distill", "trim-vocab", "lrl-compress"} <= set(meta["tags"])
    results = {(r["task"]["type"], r["dataset"]["split"], r["metrics"][0]["type"]): r["metrics"][0]["value"]
               for r in meta["model-index"][0]["results"]}
    assert results == {("text-classification", "validation", "macro_f1"): 0.61, ("text-classification", "test", "macro_f1"): 0.58,
                       ("token-classification", "validation", "entity_f1"): 0.7,
                       ("token-classification", "test", "entity_f1"): 0.72}
    body = text.split("---\n", 2)[2]
    assert "| topic | macro_f1 | 0.6100 | 0.5800 | 0.8000 | 0.7900 | 73.4% |" in body  # 0.58 / 0.79
    assert "| dev | test | teacher dev | teacher test |" in body.replace(" task | metric", "")
    assert "| 1 | distill | layers=2, init=stride, lr=0.0005 |" in body and "| 2 | trim_vocab | vocab_size=500 |" in body
    assert "| transformer-layer parameters | 100,000 | 793,088 | 12.6% |" in body  # the teacher's from its config
    assert "| parameters, total | 145,000 | 947,688 | 15.3% |" in body
    assert "| onnx-int8 | 1 | 64 | 1 | 2.50 | 10.00 | 4.0x |" in body


def test_card_with_nothing_known_still_parses():
    text = model_card({"name": "bare"})
    assert read_front_matter(text)["license"] == "other" and "No task was evaluated" in text
    assert read_front_matter("no front matter") == {}


def test_card_of_a_student_that_stopped_at_a_rung_says_so():
    stopped = {**RESULT, "stages": {**RESULT["stages"], "truncate": {"steps": 90, "stop_at": 30, "resumed_from": 10}},
               "fidelity": {"rung": 30, "of": 90, "scoring": "rung evaluation", "rescored": False}}
    body = model_card(card_data(stopped, name="s"))
    assert ("Multi-fidelity: its last distillation trained 30 steps of a 90-step schedule (rung 30); its scores "
            "were taken with the search's cheaper rung evaluation.") in body
    assert "stop_at=30" in body and "resumed_from=10" in body
    rescored = {**stopped, "fidelity": {**stopped["fidelity"], "scoring": "full", "rescored": True}}
    assert "its scores were taken in full after the search (rescored)." in model_card(card_data(rescored, name="s"))
    ranked = {**stopped, "fidelity": {**stopped["fidelity"], "scoring": "signal mlm"}}
    assert ("(rung 30); it was not evaluated on the tasks: the search ranked it by its mlm signal."
            in model_card(card_data(ranked, name="s")))
    assert "Multi-fidelity" not in model_card(card_data(RESULT, name="s"))  # trained in full: nothing to say

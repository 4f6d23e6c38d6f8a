"""In-process tokenizer training: the same text gives the same tokenizer, run after run."""

from pipeline.vocab import XLMR_SPECIALS, train_unigram_tokenizer, unigram_pieces


def test_unigram_training_is_deterministic(maltese_sentences):
    # The trainer sums in hash-map order: before the pieces were made canonical, two trainings on the same
    # text put tied pieces (and the characters appended last) at different ids, and lines encoded differently.
    runs = [train_unigram_tokenizer(maltese_sentences[:1000], 600) for _ in range(2)]
    pieces = [unigram_pieces(t) for t in runs]
    assert pieces[0] == pieces[1]
    assert [p for p, _ in pieces[0][: len(XLMR_SPECIALS)]] == list(XLMR_SPECIALS) and pieces[0][-1][0] == "<mask>"
    scores = [s for _, s in pieces[0][len(XLMR_SPECIALS) : -1]]
    assert scores == sorted(scores, reverse=True) and len(set(p for p, _ in pieces[0])) == 600
    encoded = [[t(line)["input_ids"] for line in maltese_sentences] for t in runs]
    assert encoded[0] == encoded[1]

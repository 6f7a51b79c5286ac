"""PMI-Masking: Principled Masking of Correlated Spans (Levine et al., ICLR 2021, arXiv 2010.01825).

Reference checked against: the paper's Eq. 3 (PMI_n) and Sec. 3, and the masking policy in
the README of AI21Labs/pmi-masking (longest entry wins when one contains another, one of
two overlapping entries chosen at random, remaining words as whole-word units, units drawn
until 15% of tokens, 80/10/10 per unit). Baselines as in the paper: random-token masking
(BERT), whole-word masking (BERT's WWM) and random-span masking (SpanBERT: span lengths in
words ~ Geometric(p=0.2) clipped at 10, mean 3.8).

Reproduced: the PMI_n score with its segmentation dynamic program (and, as an option, the
frequency-weighted score of the released lists), streaming n-gram counting with exact
Apriori pruning, n-grams of words only (no punctuation, no numbers), the per-length masking
vocabulary (50/25/12.5/12.5 %) above a score threshold, all four maskers under one 15%
budget, MLM pretraining of a small BERT (``transformers.BertForMaskedLM`` with a fixed
ALiBi-style distance bias) where only the masking scheme differs, and the mechanism the
paper argues from: a model trained on random tokens predicts a word of a collocation from
its visible partners (the shortcut gap). Not reproduced: the paper's 800K-entry vocabulary
over Wikipedia+BookCorpus, BERT-base scale and its SQuAD/RACE/GLUE fine-tuning.

Parts: :mod:`.ngrams` (counts, PMI_n, vocabulary), :mod:`.maskers` (training and held-out
maskings), :mod:`.model` (the BERT, its bias, held-out scores, floor, shortcut gap).
"""

from lit_modules.pmi_masking.maskers import (
    EVAL_MASKINGS,
    MASK_RATE,
    REPLACE_PROBS,
    SCHEMES,
    SPAN_MAX,
    SPAN_P,
    Masker,
    MaskingCollator,
    Scheme,
    Span,
    collocation_units,
    eval_batches,
    eval_mask,
    find_matches,
    mask_budget,
    pmi_word_units,
    replace_units,
    select_units,
    span_length_probs,
    span_units,
)
from lit_modules.pmi_masking.model import (
    ADJACENT_LAMBDA,
    ALIBI_SLOPES,
    MaskedLMPretrainer,
    MaskedScores,
    SentenceClassifier,
    adjacent_reference,
    alibi_bias,
    alibi_slopes,
    bigram_counts,
    build_bert_mlm,
    encode,
    heldout_scores,
    masked_lm_logits,
    shortcut_gap,
    unigram_floor,
    unigram_log_probs,
)
from lit_modules.pmi_masking.ngrams import (
    PAPER_LENGTH_MIX,
    SCORES,
    NGram,
    NGramCounts,
    count_ngrams,
    is_word,
    masking_vocabulary,
    ngram_pmi,
    pmi_from_counts,
    pmi_n,
    ranking_scores,
    vocabulary_set,
)

__all__ = [
    "ALIBI_SLOPES", "EVAL_MASKINGS", "MASK_RATE", "PAPER_LENGTH_MIX", "REPLACE_PROBS", "SCHEMES", "SCORES", "SPAN_MAX",
    "SPAN_P", "MaskedLMPretrainer", "MaskedScores", "Masker", "MaskingCollator", "NGram", "NGramCounts", "Scheme",
    "SentenceClassifier", "Span", "alibi_bias", "alibi_slopes", "build_bert_mlm", "collocation_units", "count_ngrams",
    "encode", "eval_batches", "eval_mask", "find_matches", "heldout_scores", "is_word", "mask_budget",
    "masked_lm_logits", "masking_vocabulary", "ngram_pmi", "pmi_from_counts", "pmi_n", "pmi_word_units", "ranking_scores",
    "replace_units", "select_units", "shortcut_gap", "span_length_probs", "span_units", "unigram_floor",
    "unigram_log_probs", "vocabulary_set", "ADJACENT_LAMBDA", "adjacent_reference", "bigram_counts",
]

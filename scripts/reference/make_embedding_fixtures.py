#!/usr/bin/env python3
"""Makes the embedding reference fixtures Hearth's tests compare against.

    pip install torch transformers sentence-transformers   # the reference (CPU is enough)
    python scripts/reference/make_embedding_fixtures.py [MINILM_DIR]

MINILM_DIR defaults to user_data/models/all-MiniLM-L6-v2 (installed by scripts/fetch-models).
Writes into tests/fixtures/embeddings/:
- minilm.json: sentence-transformers' embeddings and token counts of TEXTS with all-MiniLM-L6-v2;
- tiny-mpnet/: a random-weight MPNet (2 layers, hidden 32, 4 heads, 514 positions) with a
  WordPiece tokenizer trained here, saved in the sentence-transformers layout (mean pooling, no
  Normalize module, so the pooled vectors are compared as they are);
- tiny-mpnet.json: its token ids, transformers' last hidden states and sentence-transformers'
  embeddings for TEXTS.
Everything is seeded: rerunning gives the same files.
"""
import json
import os
import sys

import torch
from sentence_transformers import SentenceTransformer, models
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import MPNetConfig, MPNetModel, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "tests", "fixtures", "embeddings")

LONG = " ".join(
    ["Retrieval systems embed every passage of a document collection once, store the vectors,"
     " and compare a query's vector against them by cosine similarity; long passages are cut"
     " at the model's sequence limit, so only their beginning counts."] * 12)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Café naïve façade — 日本語のテキスト, Ünïcödé and emoji 🚀🔥",
    LONG,
    "HELLO world!!! 12345 $%^&*",
    "A sentence about machine learning and embeddings for retrieval.",
]


def floats(t):
    return [float(f"{x:.7g}") for x in t]


def minilm(model_dir):
    st = SentenceTransformer(model_dir, device="cpu")
    vectors = st.encode(TEXTS, convert_to_numpy=True, batch_size=4)
    counts = [len(st.tokenize([t])["input_ids"][0]) for t in TEXTS]
    with open(os.path.join(HERE, "minilm.json"), "w") as f:
        json.dump({"model": "all-MiniLM-L6-v2", "texts": TEXTS, "token_counts": counts,
                   "embeddings": [floats(v) for v in vectors]}, f)
        f.write("\n")


def tiny_mpnet():
    torch.manual_seed(0)
    corpus = TEXTS + ["the of and to a in is that for it as with was on be by this are from"] * 3
    # A WordPiece vocabulary made from the corpus in sorted order (a trained one differs from
    # run to run): every character alone and as a continuation, then the 150 commonest words.
    normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = {}
    for text in corpus:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word] = counts.get(word, 0) + 1
    chars = sorted({c for w in counts for c in w})
    words = sorted(counts, key=lambda w: (-counts[w], w))[:150]
    vocab = {}
    for t in ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + chars + ["##" + c for c in chars] + words:
        vocab.setdefault(t, len(vocab))
    tok = Tokenizer(WordPiece(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                   sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    config = MPNetConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=514, initializer_range=0.2,
                         pad_token_id=1, bos_token_id=0, eos_token_id=2)
    model = MPNetModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        # Random biases and norms too, so a wrong or missing one shows.
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.normal_(mean=1.0 if "LayerNorm.weight" in name else 0.0, std=0.1)
    raw = os.path.join(HERE, "tiny-mpnet-raw")
    model.save_pretrained(raw, safe_serialization=True)
    fast.save_pretrained(raw)
    transformer = models.Transformer(raw, max_seq_length=512)
    pooling = models.Pooling(32, pooling_mode="mean")
    out_dir = os.path.join(HERE, "tiny-mpnet")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(out_dir)
    for root, _, files in os.walk(raw, topdown=False):
        for f in files:
            os.remove(os.path.join(root, f))
        os.rmdir(root)
    for extra in ["README.md"]:
        if os.path.exists(os.path.join(out_dir, extra)):
            os.remove(os.path.join(out_dir, extra))

    st = SentenceTransformer(out_dir, device="cpu")
    vectors = st.encode(TEXTS, convert_to_numpy=True, batch_size=3)
    hf = MPNetModel.from_pretrained(out_dir).eval()
    ids, hidden = [], []
    for text in TEXTS:
        enc = st.tokenize([text])
        with torch.no_grad():
            h = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state[0]
        ids.append(enc["input_ids"][0].tolist())
        hidden.append(floats(h.flatten().tolist()))
    with open(os.path.join(HERE, "tiny-mpnet.json"), "w") as f:
        json.dump({"texts": TEXTS, "ids": ids, "hidden_states": hidden,
                   "embeddings": [floats(v) for v in vectors]}, f)
        f.write("\n")


if __name__ == "__main__":
    # One thread: the same sums in the same order on every run.
    torch.set_num_threads(1)
    minilm(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "user_data/models/all-MiniLM-L6-v2"))
    tiny_mpnet()

"""Sparse lexical retrieval with `bm25s`, built incrementally so a corpus never has to sit in memory.

Documents are tokenised batch by batch with bm25s's own tokenizer (English stopwords, growing vocabulary) and only
their token ids are kept; the BM25 matrix is built once at the end. Rows are document positions (0..n-1), the same
row order as the dense index, so fusion needs no id lookups.
"""

from __future__ import annotations

import json
import os
from array import array
from pathlib import Path
from typing import Sequence

import numpy as np

from mmrag_rft.config import atomic_write_text

_META = "bm25_meta.json"


class BM25Index:
    def __init__(self, *, stopwords: str = "en", k1: float = 1.5, b: float = 0.75, method: str = "lucene"):
        from bm25s.tokenization import Tokenizer

        self.stopwords, self.k1, self.b, self.method = stopwords, k1, b, method
        self.tokenizer = Tokenizer(stopwords=stopwords)
        # all documents' token ids back to back, and each document's length: ~4 bytes per token, no per-doc objects
        self._tokens = array("I")
        self._lengths = array("I")
        self.retriever = None

    def __len__(self) -> int:
        return len(self._lengths) if self.retriever is None else int(self._num_docs)

    # -- building -----------------------------------------------------------------------------------
    def add(self, texts: Sequence[str]) -> None:
        """Tokenise one batch and keep its token ids (compact uint32 arrays, not strings)."""
        if self.retriever is not None:
            raise RuntimeError("BM25Index is already finalised; build a new one to add documents")
        if not texts:
            return
        ids = self.tokenizer.tokenize(list(texts), update_vocab=True, return_as="ids", show_progress=False)
        for d in ids:
            self._tokens.extend(d)
            self._lengths.append(len(d))

    def finalize(self) -> BM25Index:
        import bm25s
        from bm25s.tokenization import Tokenized

        retriever = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        ends = np.cumsum(np.frombuffer(self._lengths, dtype=np.uint32), dtype=np.int64)
        flat = self._tokens
        docs = [flat[int(e - n):int(e)].tolist() for e, n in zip(ends, self._lengths)]
        self._num_docs = len(docs)
        if docs:
            retriever.index(Tokenized(ids=docs, vocab=self.tokenizer.get_vocab_dict()), show_progress=False)
        self.retriever = retriever
        self._tokens, self._lengths = array("I"), array("I")
        return self

    @classmethod
    def from_texts(cls, texts: Sequence[str], **kw: object) -> BM25Index:
        idx = cls(**kw)  # type: ignore[arg-type]
        idx.add(texts)
        return idx.finalize()

    # -- querying -----------------------------------------------------------------------------------
    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """(row, score) best first; only rows sharing at least one non-stopword token with the query."""
        from bm25s.tokenization import Tokenized

        if self.retriever is None:
            raise RuntimeError("BM25Index.search before finalize()")
        n = len(self)
        k = min(k, n)
        if k <= 0:
            return []
        q = self.tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)[0]
        empty = self.tokenizer.get_vocab_dict().get("")
        q = [t for t in q if t != empty]
        if not q:  # only stopwords or unseen words: BM25 has no opinion (and must not match empty documents)
            return []
        docs, scores = self.retriever.retrieve(Tokenized(ids=[q], vocab=self.tokenizer.get_vocab_dict()), k=k,
                                               show_progress=False, n_threads=0)
        return [(int(d), float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]

    # -- persistence --------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> None:
        if self.retriever is None:
            self.finalize()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self._num_docs:
            self.retriever.save(str(d), show_progress=False)
        self.tokenizer.save_vocab(str(d))
        self.tokenizer.save_stopwords(str(d))
        atomic_write_text(d / _META, json.dumps({"num_docs": self._num_docs, "stopwords": self.stopwords,
                                                 "k1": self.k1, "b": self.b, "method": self.method}))

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, mmap: bool = False) -> BM25Index:
        import bm25s

        d = Path(directory)
        meta_path = d / _META
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: missing (not a BM25 index folder)")
        meta = json.loads(meta_path.read_text())
        idx = cls(stopwords=meta["stopwords"], k1=meta["k1"], b=meta["b"], method=meta["method"])
        idx.tokenizer.load_vocab(str(d))
        idx.tokenizer.load_stopwords(str(d))
        idx._num_docs = int(meta["num_docs"])
        idx.retriever = (bm25s.BM25.load(str(d), mmap=mmap, show_progress=False, verbosity=0) if idx._num_docs
                         else bm25s.BM25())
        return idx

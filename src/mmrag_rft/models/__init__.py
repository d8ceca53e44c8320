"""Policy model backends behind one protocol (`PolicyBackend`): Hugging Face (text or vision-language), vLLM.

Import the concrete modules lazily (`mmrag_rft.models.loading.load_backend`): they pull in torch/transformers.
"""

from mmrag_rft.models.backend import PolicyBackend

__all__ = ["PolicyBackend"]

"""MMRAG-RFT: two-stage reinforcement fine-tuning for explainable multimodal retrieval-augmented generation."""

__version__ = "0.1.0"

from mmrag_rft.data.schema import MODALITIES, Candidate, DataError, Sample

__all__ = ["MODALITIES", "Candidate", "DataError", "Sample"]

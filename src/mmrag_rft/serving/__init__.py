"""HTTP serving: the JSON API and the explanation page (`mmrag serve`)."""

from mmrag_rft.serving.app import create_app
from mmrag_rft.serving.schemas import AskRequest, AskResponse

__all__ = ["AskRequest", "AskResponse", "create_app"]

"""HTTP serving: the JSON API and the explanation page (`mmrag serve`)."""

from mmrag_rft.serving.app import AskRequest, AskResponse, create_app

__all__ = ["AskRequest", "AskResponse", "create_app"]

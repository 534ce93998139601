"""Embedders (bundled model, OpenAI-compatible endpoint) and the embedding cache."""

from shardrag.config import Settings
from shardrag.embed.base import Embedder
from shardrag.embed.cache import EmbeddingCache
from shardrag.embed.tokenizer import ModelTokenizer


def open_embedder(settings: Settings) -> Embedder:
    """The embedder the settings name (the model loads on first use, not here)."""
    if settings.embedder == "http":
        from shardrag.embed.http import HttpEmbedder

        return HttpEmbedder(
            url=settings.embed_url or "",
            model=settings.embed_model or "text-embedding-3-small",
            api_key=settings.embed_api_key,
            dimension=settings.embed_dimension,
            batch_size=settings.embed_batch_size,
            timeout=settings.embed_timeout_seconds,
        )
    from shardrag.embed.bundled import BundledEmbedder

    return BundledEmbedder(
        batch_size=settings.embed_batch_size,
        runtime=settings.embed_runtime,
        cache_dir=settings.model_cache_dir,
    )


__all__ = ["Embedder", "EmbeddingCache", "ModelTokenizer", "open_embedder"]

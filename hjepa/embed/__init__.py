"""``hjepa-embed``: an encoder over an image collection into resumable Parquet shards, locally or on Ray.

pyarrow, faiss and ray load only when used.
"""

from hjepa.embed.job import embed_collection, open_source
from hjepa.embed.options import ENGINES, EmbedOptions

__all__ = ["ENGINES", "EmbedOptions", "embed_collection", "open_source"]

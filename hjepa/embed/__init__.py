"""``hjepa-embed``: run an encoder over an image collection (a folder, a path list or a dataset) into Parquet shards.

``embed_collection(EmbedOptions(...))`` runs a job on the local engine (decoding workers overlapped with the encoder)
or on Ray Data (``engine="ray"``), resumably; ``build_indexes`` adds a FAISS index. The on-disk layout is read by
:mod:`hjepa.inference.features.collection` (serving reads it from there). pyarrow, faiss and ray load only when used.
"""

from hjepa.embed.job import embed_collection, open_source
from hjepa.embed.options import ENGINES, EmbedOptions

__all__ = ["ENGINES", "EmbedOptions", "embed_collection", "open_source"]

"""`i2i download`: the standard datasets, published generators and FID Inception weights, in one command each.

catalogue.py/catalogue.toml say what exists and where; transfer.py fetches one file (resume, verification);
archives.py unpacks safely; products.py turns a fetched file into what the other commands take.
"""

from i2i.tools.download.catalogue import KINDS, MIRROR_ENV, Entry, entries, lookup
from i2i.tools.download.products import Downloaded, download_dataset, download_inception, download_model

__all__ = ["KINDS", "MIRROR_ENV", "Downloaded", "Entry", "download_dataset", "download_inception", "download_model",
           "entries", "lookup"]

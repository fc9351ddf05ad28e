"""fgrpo_core: the FGRPO library. Pure: tensors and typed records in, the same out.

No Prefect, no DVC, no hidden file I/O (a test enforces the imports). Functions that write
files take the path they write as an explicit argument.
"""

__version__ = "0.1.0"

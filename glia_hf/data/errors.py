"""Errors raised by the data package.

Every error about a label file names the file and, where one row is at fault, the row, so that a user can open the
file and fix it. Row numbers are the ones a person sees: the 1-based line of a text/CSV file (the header is line 1),
the 1-based spreadsheet row of an ``.xlsx`` sheet, and the 1-based element index (MATLAB style) of a ``.mat`` array.
"""

from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class IQADataError(ValueError):
    """A label file or data set folder does not have the expected content.

    Attributes:
        file: the file or folder at fault (``str``), or ``None``.
        row: the row at fault (see the module docstring for how rows are counted), or ``None``.
    """

    def __init__(self, message: str, file: Optional[PathLike] = None, row: Optional[Union[int, str]] = None):
        self.file = None if file is None else os.fspath(file)
        self.row = row
        where = ""
        if self.file is not None:
            where = self.file if row is None else f"{self.file}, row {row}"
            where += ": "
        super().__init__(where + message)


class IQAMissingFileError(IQADataError, FileNotFoundError):
    """A file or folder that a data set's layout requires is missing (also a ``FileNotFoundError``)."""


class IQAImageError(IQADataError, OSError):
    """An image cannot be read: missing, not an image, corrupt or truncated. ``file`` is the image's path."""

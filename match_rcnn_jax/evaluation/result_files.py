"""Result files in the official formats, read and written as streams: a JSON array's records
one at a time (`iter_json_array`), written one at a time (`JsonArrayWriter`), and the checks
every numeric field must pass.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np


class ResultsError(ValueError):
  """A malformed result file (the message names the file and the record)."""


def is_number(v) -> bool:
  """A finite int or float (not a bool): what every numeric field of a result record must be."""
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def all_numbers(values: list) -> bool:
  """`is_number` of every element of a list of many numbers, at a few microseconds a hundred
  (what checking 882 keypoint values of each of a million records needs)."""
  if not {type(v) for v in values} <= {int, float}:  # bools and int / float subclasses too
    return False
  try:
    return bool(np.isfinite(np.asarray(values, np.float64)).all())
  except OverflowError:  # an int beyond float64
    return False


def iter_json_array(path: str, chunk_chars: int = 1 << 22, progress=None):
  """The elements of the JSON array in file `path`, one at a time, parsed as the file is read
  (one chunk of its text and one element held at a time, whatever the file's size). Raises
  ResultsError naming the file and the element where the text is not a JSON array.
  `progress(n)`, if given, is called with the number of characters of each chunk read."""
  decoder = json.JSONDecoder()
  try:
    f = open(path)
  except OSError as e:
    raise ResultsError(f"{path}: cannot read JSON: {e}") from e
  with f:
    buf, pos, eof, index = "", 0, False, 0

    def fill() -> bool:
      """The next chunk appended to the unread text; False at the end of the file."""
      nonlocal buf, pos, eof
      if eof:
        return False
      more = f.read(chunk_chars)
      eof = not more
      if progress is not None and more:
        progress(len(more))
      buf, pos = buf[pos:] + more, 0
      return True

    def skip_space():
      nonlocal pos
      while True:
        while pos < len(buf) and buf[pos].isspace():
          pos += 1
        if pos < len(buf) or not fill():
          return

    skip_space()
    if pos >= len(buf) or buf[pos] != "[":
      raise ResultsError(f"{path}: expected a JSON array (a list of records)")
    pos += 1
    skip_space()
    if pos < len(buf) and buf[pos] == "]":
      return
    while True:
      while True:  # one element; parsed only once text follows it (a number may go on)
        try:
          item, end = decoder.raw_decode(buf, pos)
          if end < len(buf) or eof:
            break
        except json.JSONDecodeError as e:
          if eof:
            raise ResultsError(f"{path}: record {index}: invalid JSON: {e}") from e
        fill()
      pos = end
      yield item
      index += 1
      skip_space()
      if pos >= len(buf):
        raise ResultsError(f"{path}: the array ends after record {index - 1} without ']'")
      if buf[pos] == "]":
        pos += 1
        skip_space()
        if pos < len(buf):
          raise ResultsError(f"{path}: text after the array's closing ']'")
        return
      if buf[pos] != ",":
        raise ResultsError(f"{path}: expected ',' or ']' after record {index - 1}")
      pos += 1
      skip_space()


class JsonArrayWriter:
  """A JSON array written to `path` one element at a time (a temporary file beside it, moved
  into place by `close`: an interrupted run leaves no half-written file). A context manager;
  leaving it by an exception removes the temporary file."""

  def __init__(self, path: str):
    self.path, self.count = path, 0
    self._tmp = f"{path}.tmp-{os.getpid()}"
    self._f = open(self._tmp, "w")

  def add(self, item) -> None:
    self._f.write(("[" if not self.count else ",\n") + json.dumps(item))
    self.count += 1

  def extend(self, items) -> None:
    for item in items:
      self.add(item)

  def close(self) -> None:
    self._f.write("]" if self.count else "[]")
    self._f.close()
    os.replace(self._tmp, self.path)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *exc):
    if exc_type is None:
      self.close()
    else:
      self._f.close()
      os.remove(self._tmp)



"""LightGBM's text model format, parsed and validated in Python before anything uses it.

LightGBM's own loader trusts its input: a truncated file crashes it (SIGSEGV) and a
``nan`` threshold or a short tree section aborts it (SIGABRT), so the engine never hands
model text to native code. This module reads the format itself and refuses, with a
``ModelError`` naming the file and the line, anything it cannot vouch for.

Rules enforced (format ``version=v4``, what LightGBM >= 3 writes):

- The file is UTF-8 with ``\\n`` line ends. Line 1 is ``tree``; header ``key=value``
  lines follow up to the first blank line. Required keys: ``version``, ``num_class``,
  ``num_tree_per_iteration``, ``label_index``, ``max_feature_idx``, ``objective``,
  ``feature_names``, ``feature_infos``, ``tree_sizes``; ``monotone_constraints`` is
  allowed, and the bare line ``average_output`` (a random forest, ``boosting = "rf"``:
  the prediction is the mean of the trees, not their sum); any other key is refused.
  Only single-output models (``num_class=1``, ``num_tree_per_iteration=1``).
- ``feature_names`` and ``feature_infos`` list exactly ``max_feature_idx + 1`` entries.
- Then one section per tree, ``Tree=0``, ``Tree=1``, ... in order, each with exactly the
  keys LightGBM writes (``num_leaves``, ``num_cat``, ``split_feature``, ``split_gain``,
  ``threshold``, ``decision_type``, ``left_child``, ``right_child``, ``leaf_value``,
  ``leaf_weight``, ``leaf_count``, ``internal_value``, ``internal_weight``,
  ``internal_count``, ``is_linear``, ``shrinkage``), then the line ``end of trees``. What
  follows it (importances, parameters) does not change a prediction and is not read.
- ``tree_sizes`` has one entry per tree, each the byte length of that tree's section, so a
  section that lost or gained bytes is caught even when it still parses.
- Per tree with ``n = num_leaves`` (1 <= n <= 131072): node arrays hold ``n - 1`` entries,
  leaf arrays ``n`` (``leaf_weight`` may be empty for a one-leaf tree). Numbers are plain
  decimals; every float is finite, except that a threshold may be ``inf`` or ``-inf``
  (LightGBM writes them, e.g. for ``gamma``; ``value <= inf`` is well defined), never
  ``nan``. ``split_feature`` lies in ``[0, max_feature_idx]``.
  ``decision_type`` uses only the default-left bit (2) and a missing type of None (0),
  Zero (4) or NaN (8): categorical splits (bit 1, ``num_cat > 0``) and linear trees
  (``is_linear=1``) are refused. Children are ``>= 1`` for a node and ``~leaf`` for a
  leaf; every node but the root and every leaf has exactly one parent, and every node is
  reachable from the root (no cycles).
- ``objective``: ``regression`` and ``regression_l1`` (optionally ``sqrt``: the output is
  ``sign(s) * s * s``), ``huber``, ``fair``, ``quantile``, ``mape`` (identity),
  ``poisson``, ``gamma``, ``tweedie`` (``exp(s)``), ``binary sigmoid:<k>`` with finite
  ``k > 0`` (``1 / (1 + exp(-k * s))``). Anything else is refused by name.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from engine.errors import ModelError

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

FORMAT_VERSION = "v4"
MAX_LEAVES = 131_072  # LightGBM's own upper bound on num_leaves
DEFAULT_LEFT_BIT = 2
CATEGORICAL_BIT = 1
MISSING_NONE = 0
MISSING_ZERO = 1
MISSING_NAN = 2

_INT = r"-?[0-9]+"
_FLOAT = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_INT_LIST = re.compile(rf"(?:{_INT}(?: {_INT})*)?")
_FLOAT_LIST = re.compile(rf"(?:{_FLOAT}(?: {_FLOAT})*)?")
_BOUND = rf"(?:{_FLOAT}|[+-]?inf)"
_BOUND_LIST = re.compile(rf"(?:{_BOUND}(?: {_BOUND})*)?")
_BOUND_INF = re.compile(r"[+-]?inf")
_INT_ONE = re.compile(_INT)
_FLOAT_ONE = re.compile(_FLOAT)

_HEADER_REQUIRED = (
    "version",
    "num_class",
    "num_tree_per_iteration",
    "label_index",
    "max_feature_idx",
    "objective",
    "feature_names",
    "feature_infos",
    "tree_sizes",
)
_HEADER_IGNORED = ("monotone_constraints",)  # training-time only; no effect on a prediction
_TREE_KEYS = (
    "num_leaves",
    "num_cat",
    "split_feature",
    "split_gain",
    "threshold",
    "decision_type",
    "left_child",
    "right_child",
    "leaf_value",
    "leaf_weight",
    "leaf_count",
    "internal_value",
    "internal_weight",
    "internal_count",
    "is_linear",
    "shrinkage",
)
# keys LightGBM writes only for what the evaluator refuses: named, not "unknown"
_UNSUPPORTED_TREE_KEYS = {
    "cat_boundaries": "categorical splits are not supported: train with numerical features only",
    "cat_threshold": "categorical splits are not supported: train with numerical features only",
    "leaf_const": "linear trees are not supported",
    "num_features": "linear trees are not supported",
    "leaf_features": "linear trees are not supported",
    "leaf_coeff": "linear trees are not supported",
}
END_OF_TREES = "end of trees"


class OutputTransform(enum.IntEnum):
    """How the objective turns the summed tree score ``s`` into ``Booster.predict``'s value."""

    IDENTITY = 0
    SIGMOID = 1  # 1 / (1 + exp(-parameter * s))
    SIGNED_SQUARE = 2  # sign(s) * s * s: reg_sqrt trained on sqrt(|y|)
    EXP = 3  # log-link objectives


@dataclass(frozen=True)
class Objective:
    """The model's objective as LightGBM wrote it, and the transform it implies."""

    text: str
    name: str
    transform: OutputTransform
    parameter: float = 0.0


_IDENTITY_OBJECTIVES = ("huber", "fair", "quantile", "mape")
_EXP_OBJECTIVES = ("poisson", "gamma", "tweedie")
_SQRT_OBJECTIVES = ("regression", "regression_l1")


@dataclass(frozen=True)
class Tree:
    """One tree's arrays. ``left``/``right``: ``>= 1`` is a node, ``< 0`` is leaf ``~c``."""

    line: int
    split_feature: I64
    threshold: F64
    decision_type: I64
    left: I64
    right: I64
    leaf_value: F64
    leaf_count: I64  # training rows per leaf: the cover TreeSHAP weighs paths by
    internal_count: I64  # training rows per node

    @property
    def num_leaves(self) -> int:
        return int(self.leaf_value.shape[0])


@dataclass(frozen=True)
class TextModel:
    """A validated LightGBM text model: what prediction needs, nothing else."""

    source: str
    max_feature_idx: int
    feature_names: tuple[str, ...]
    objective: Objective
    trees: tuple[Tree, ...]
    # a random forest: Booster.predict divides the summed trees by their number
    average_output: bool = False


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.source = source
        self.data = data
        raw = data.split(b"\n")
        self.offsets: list[int] = []
        self.lines: list[str] = []
        pos = 0
        for number, chunk in enumerate(raw, start=1):
            self.offsets.append(pos)
            pos += len(chunk) + 1
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.fail(number, f"not UTF-8 text ({exc.reason} at byte {exc.start} of the line)")
            if "\r" in text:
                self.fail(number, "carriage return in the line: the file must use \\n line ends")
            self.lines.append(text)

    def fail(self, number: int, reason: str) -> NoReturn:
        raise ModelError(f"{self.source}, line {number}: {reason}")

    def line(self, index: int) -> str:
        return self.lines[index] if index < len(self.lines) else ""

    def at_end(self, index: int) -> bool:
        return index >= len(self.lines) or (index == len(self.lines) - 1 and not self.lines[index])


def parse_model_file(path: str | Path) -> TextModel:
    """Read and validate a LightGBM text model file.

    Raises:
        ModelError: unreadable file, or any rule of the format broken (names the line).
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelError(f"{p}: cannot read model file: {exc.strerror}") from exc
    return parse_model_text(data, str(p))


def parse_model_text(data: bytes | str, source: str = "<model text>") -> TextModel:
    """Validate LightGBM model text (as ``Booster.model_to_string`` or ``save_model`` write it).

    Raises:
        ModelError: a rule of the format (see the module docstring) is broken; the message
            names ``source`` and the 1-based line.
    """
    r = _Reader(data.encode("utf-8") if isinstance(data, str) else data, source)
    if r.line(0) != "tree":
        r.fail(1, f"expected 'tree' (a LightGBM text model), got {_show(r.line(0))}")
    header, average_output, index = _read_header(r)
    max_feature_idx = _header_int(r, header, "max_feature_idx", 0, 1 << 24)
    n_features = max_feature_idx + 1
    version_line, version = header["version"]
    if version != FORMAT_VERSION:
        r.fail(version_line, f"model format {version!r} is not supported (expected {FORMAT_VERSION!r})")  # fmt: skip
    for key in ("num_class", "num_tree_per_iteration"):
        if _header_int(r, header, key, 0, 1 << 16) != 1:
            r.fail(header[key][0], f"{key} must be 1: multiclass LightGBM models are not supported")
    _header_int(r, header, "label_index", 0, 1 << 24)
    names_line, names_text = header["feature_names"]
    names = tuple(names_text.split(" "))
    if len(names) != n_features or any(not n for n in names):
        r.fail(names_line, f"feature_names lists {len(names)} names (or an empty one), "
                           f"max_feature_idx={max_feature_idx} needs {n_features}")  # fmt: skip
    if len(set(names)) != len(names):
        r.fail(names_line, "feature_names repeats a name")
    infos_line, infos_text = header["feature_infos"]
    if len(infos_text.split(" ")) != n_features:
        r.fail(infos_line, f"feature_infos lists {len(infos_text.split(' '))} entries, "
                           f"max_feature_idx={max_feature_idx} needs {n_features}")  # fmt: skip
    objective = _parse_objective(r, *header["objective"])
    sizes_line, sizes_text = header["tree_sizes"]
    sizes = _int_list(r, sizes_line, "tree_sizes", sizes_text)
    if not sizes or any(s <= 0 for s in sizes):
        r.fail(sizes_line, "tree_sizes must list one positive byte count per tree")
    trees: list[Tree] = []
    while True:
        while index < len(r.lines) and r.lines[index] == "":
            index += 1
        if index >= len(r.lines):
            r.fail(len(r.lines), f"file ends after {len(trees)} trees without '{END_OF_TREES}': "
                                 "truncated?")  # fmt: skip
        text = r.lines[index]
        if text == END_OF_TREES:
            break
        if text != f"Tree={len(trees)}":
            r.fail(index + 1, f"expected 'Tree={len(trees)}' or '{END_OF_TREES}', got {_show(text)}")  # fmt: skip
        start = index
        tree, index = _read_tree(r, index, len(trees), max_feature_idx)
        if len(trees) < len(sizes):
            end = index
            while end < len(r.lines) and r.lines[end] == "":
                end += 1
            nbytes = (r.offsets[end] if end < len(r.lines) else len(r.data)) - r.offsets[start]
            if nbytes != sizes[len(trees)]:
                r.fail(start + 1, f"tree {len(trees)} is {nbytes} bytes, tree_sizes (line "
                                  f"{sizes_line}) says {sizes[len(trees)]}: the section was cut or edited")  # fmt: skip
        trees.append(tree)
    if len(trees) != len(sizes):
        r.fail(sizes_line, f"tree_sizes lists {len(sizes)} trees, the file holds {len(trees)}")
    return TextModel(source, max_feature_idx, names, objective, tuple(trees), average_output)


def _show(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _read_header(r: _Reader) -> tuple[dict[str, tuple[int, str]], bool, int]:
    header: dict[str, tuple[int, str]] = {}
    average_output = False
    index = 1
    while True:
        if r.at_end(index):
            r.fail(index + 1, "file ends inside the header: truncated?")
        text = r.lines[index]
        if text == "":
            break
        key, eq, value = text.partition("=")
        if not eq:
            if key != "average_output":
                r.fail(index + 1, f"expected 'key=value' in the header, got {_show(text)}")
            if average_output:
                r.fail(index + 1, "average_output given twice")
            average_output = True
            index += 1
            continue
        if key not in _HEADER_REQUIRED and key not in _HEADER_IGNORED:
            r.fail(index + 1, f"unknown header key {key!r}")
        if key in header:
            r.fail(index + 1, f"{key} given twice (first on line {header[key][0]})")
        header[key] = (index + 1, value)
        index += 1
    for key in _HEADER_REQUIRED:
        if key not in header:
            r.fail(index + 1, f"the header ends without {key!r}")
    return header, average_output, index


def _header_int(r: _Reader, header: dict[str, tuple[int, str]], key: str, lo: int, hi: int) -> int:
    number, text = header[key]
    if not _INT_ONE.fullmatch(text) or not lo <= int(text) <= hi:
        r.fail(number, f"{key} must be an integer in [{lo}, {hi}], got {_show(text)}")
    return int(text)


def _parse_objective(r: _Reader, number: int, text: str) -> Objective:
    name, *options = text.split(" ")
    if name == "binary":
        if len(options) != 1 or not options[0].startswith("sigmoid:"):
            r.fail(number, f"objective {text!r}: expected 'binary sigmoid:<k>'")
        value = options[0].removeprefix("sigmoid:")
        if not _FLOAT_ONE.fullmatch(value) or not (0.0 < float(value) < math.inf):
            r.fail(number, f"objective {text!r}: the sigmoid parameter must be a finite number > 0")
        return Objective(text, name, OutputTransform.SIGMOID, float(value))
    if name in _SQRT_OBJECTIVES and options in ([], ["sqrt"]):
        transform = OutputTransform.SIGNED_SQUARE if options else OutputTransform.IDENTITY
        return Objective(text, name, transform)
    if name in _IDENTITY_OBJECTIVES and not options:
        return Objective(text, name, OutputTransform.IDENTITY)
    if name in _EXP_OBJECTIVES and not options:
        return Objective(text, name, OutputTransform.EXP)
    r.fail(number, f"objective {text!r} is not supported (binary and the regression family are)")


def _int_list(r: _Reader, number: int, key: str, text: str) -> list[int]:
    if not _INT_LIST.fullmatch(text):
        r.fail(number, f"{key}: expected integers separated by single spaces, got {_show(text)}")
    return [int(t) for t in text.split(" ")] if text else []


def _float_list(r: _Reader, number: int, key: str, text: str, infinite: bool = False) -> list[float]:  # fmt: skip
    if not (_BOUND_LIST if infinite else _FLOAT_LIST).fullmatch(text):
        r.fail(number, f"{key}: expected decimal numbers separated by single spaces, got {_show(text)}")  # fmt: skip
    values = [float(t) for t in text.split(" ")] if text else []
    for k, v in enumerate(values):
        if not math.isfinite(v) and not (infinite and _BOUND_INF.fullmatch(text.split(" ")[k])):
            r.fail(number, f"{key}: entry {k} overflows to {v}")
    return values


def _read_tree(r: _Reader, index: int, tree_index: int, max_feature_idx: int) -> tuple[Tree, int]:
    first = index + 1
    fields: dict[str, tuple[int, str]] = {}
    index += 1
    while index < len(r.lines) and r.lines[index] != "":
        text = r.lines[index]
        if text.startswith("Tree=") or text == END_OF_TREES:
            break
        key, eq, value = text.partition("=")
        if not eq:
            r.fail(index + 1, f"tree {tree_index}: expected 'key=value', got {_show(text)}")
        if key in _UNSUPPORTED_TREE_KEYS:
            r.fail(index + 1, f"tree {tree_index}: {_UNSUPPORTED_TREE_KEYS[key]}")
        if key not in _TREE_KEYS:
            r.fail(index + 1, f"tree {tree_index}: unknown key {key!r}")
        if key in fields:
            r.fail(index + 1, f"tree {tree_index}: {key} given twice")
        fields[key] = (index + 1, value)
        index += 1
    for key in _TREE_KEYS:
        if key not in fields:
            where = "the file ends" if r.at_end(index) else "the section ends"
            r.fail(index + 1 if not r.at_end(index) else len(r.lines),
                   f"{where} inside tree {tree_index} (from line {first}) before its {key!r} line: "
                   "truncated?")  # fmt: skip

    def number(key: str, lo: int, hi: int) -> int:
        line, text = fields[key]
        if not _INT_ONE.fullmatch(text) or not lo <= int(text) <= hi:
            r.fail(line, f"tree {tree_index}: {key} must be an integer in [{lo}, {hi}], got {_show(text)}")  # fmt: skip
        return int(text)

    n = number("num_leaves", 1, MAX_LEAVES)
    m = n - 1
    if number("num_cat", 0, MAX_LEAVES) != 0:
        r.fail(fields["num_cat"][0], f"tree {tree_index}: categorical splits are not supported: "
                                     "train with numerical features only")  # fmt: skip
    if number("is_linear", 0, 1) != 0:
        r.fail(fields["is_linear"][0], f"tree {tree_index}: linear trees are not supported")
    shrinkage_line, shrinkage = fields["shrinkage"]
    if not _FLOAT_ONE.fullmatch(shrinkage) or not math.isfinite(float(shrinkage)):
        r.fail(shrinkage_line, f"tree {tree_index}: shrinkage must be one finite number, got {_show(shrinkage)}")  # fmt: skip

    def ints(key: str, count: int, lo: int, hi: int, *also: int) -> list[int]:
        line, text = fields[key]
        values = _int_list(r, line, key, text)
        if len(values) not in (count, *also):
            r.fail(line, f"tree {tree_index}: {key} has {len(values)} entries, num_leaves={n} "
                         f"(line {fields['num_leaves'][0]}) needs {count}")  # fmt: skip
        for k, v in enumerate(values):
            if not lo <= v <= hi:
                r.fail(line, f"tree {tree_index}: {key} entry {k} is {v}, outside [{lo}, {hi}]")
        return values

    def floats(key: str, count: int, *also: int, infinite: bool = False) -> list[float]:
        line, text = fields[key]
        values = _float_list(r, line, key, text, infinite)
        if len(values) not in (count, *also):
            r.fail(line, f"tree {tree_index}: {key} has {len(values)} entries, num_leaves={n} "
                         f"(line {fields['num_leaves'][0]}) needs {count}")  # fmt: skip
        return values

    split_feature = ints("split_feature", m, 0, max_feature_idx)
    floats("split_gain", m)
    threshold = floats("threshold", m, infinite=True)
    decision_type = ints("decision_type", m, 0, 255)
    dt_line = fields["decision_type"][0]
    for k, dt in enumerate(decision_type):
        if dt & CATEGORICAL_BIT:
            r.fail(dt_line, f"tree {tree_index}: node {k} is a categorical split (decision_type "
                            f"{dt}): train with numerical features only")  # fmt: skip
        if dt & ~0b1111 or (dt >> 2) & 3 == 3:
            r.fail(dt_line, f"tree {tree_index}: node {k} has unknown decision_type bits ({dt})")
    left = ints("left_child", m, -n, m - 1)
    right = ints("right_child", m, -n, m - 1)
    _check_structure(r, tree_index, n, left, right, fields["left_child"][0], fields["right_child"][0])  # fmt: skip
    leaf_value = floats("leaf_value", n)
    floats("leaf_weight", n, *((0,) if n == 1 else ()))
    leaf_count = ints("leaf_count", n, 0, 1 << 62)
    floats("internal_value", m)
    floats("internal_weight", m)
    internal_count = ints("internal_count", m, 0, 1 << 62)
    tree = Tree(
        line=first,
        split_feature=np.array(split_feature, np.int64),
        threshold=np.array(threshold, np.float64),
        decision_type=np.array(decision_type, np.int64),
        left=np.array(left, np.int64),
        right=np.array(right, np.int64),
        leaf_value=np.array(leaf_value, np.float64),
        leaf_count=np.array(leaf_count, np.int64),
        internal_count=np.array(internal_count, np.int64),
    )
    return tree, index


def _check_structure(r: _Reader, tree_index: int, n: int, left: list[int], right: list[int],
                     left_line: int, right_line: int) -> None:  # fmt: skip
    # Each node but the root and each leaf has exactly one parent: with n - 1 nodes there
    # are 2(n - 1) child slots for (n - 2) nodes + n leaves, so no repeats means all used.
    node_parent: dict[int, int] = {}
    leaf_parent: dict[int, int] = {}
    for parent in range(n - 1):
        for child, line in ((left[parent], left_line), (right[parent], right_line)):
            if child == 0:
                r.fail(line, f"tree {tree_index}: node {parent} points back at the root (a cycle)")
            seen = node_parent if child > 0 else leaf_parent
            key = child if child > 0 else ~child
            if key in seen:
                what = f"node {key}" if child > 0 else f"leaf {key}"
                r.fail(line, f"tree {tree_index}: {what} is a child of both node {seen[key]} and "
                             f"node {parent} (a shared subtree or a cycle)")  # fmt: skip
            seen[key] = parent
    reached = 0
    stack = [0] if n > 1 else []
    while stack:
        node = stack.pop()
        reached += 1
        stack.extend(c for c in (left[node], right[node]) if c > 0)
    if reached != n - 1:
        r.fail(left_line, f"tree {tree_index}: {n - 1 - reached} of {n - 1} nodes cannot be "
                          "reached from the root (children form a cycle)")  # fmt: skip

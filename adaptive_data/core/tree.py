"""Small pytree helpers that optax.tree does not provide: parameter-path filters."""

import re
from typing import Any

import jax

PyTree = Any


def leaf_paths(tree: PyTree) -> list[str]:
    """`/`-joined key paths of the leaves of `tree`, in `jax.tree.leaves` order.

    Dict keys, attribute names and sequence indices are used as they are, e.g.
    `{"params": {"Dense_0": {"kernel": w}}}` gives `["params/Dense_0/kernel"]`.
    """
    paths_and_leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in paths_and_leaves]


def path_mask(tree: PyTree, pattern: str) -> PyTree:
    """Tree of Python bools: True where `re.search(pattern, path)` matches.

    Raises:
      ValueError: if the pattern matches no leaf (the message lists some paths).
    """
    regex = re.compile(pattern)
    paths = leaf_paths(tree)
    keep = [regex.search(path) is not None for path in paths]
    if not any(keep):
        shown = ", ".join(repr(p) for p in paths[:12])
        more = f", ... ({len(paths)} in all)" if len(paths) > 12 else ""
        raise ValueError(
            f"param_filter {pattern!r} matches no parameter; available paths: {shown}{more}"
        )
    return jax.tree.unflatten(jax.tree.structure(tree), keep)

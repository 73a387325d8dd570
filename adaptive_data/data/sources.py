"""Where documents come from: the embedded corpus, any TFDS dataset, or local text files.

A data spec is one string (``config.data.generic`` / ``config.data.target``):

- ``embedded``: the multi-domain corpus shipped in the package (``config.data.task``
  picks the target task; see ``adaptive_data.data.embedded_corpus``).
- ``tfds:NAME[/CONFIG][:VERSION]``: a prepared TFDS dataset (array_record format) read
  with ``tfds.data_source``; the text lives under ``config.data.text_key``.
- ``file:PATH.txt`` (one document per line) or ``file:PATH.jsonl`` (one JSON object per
  line with a ``text`` field and an optional ``domain`` field).

``load_corpus`` resolves both specs into five random-access splits of records
``{"text": bytes, "domain": str, "doc_id": str}``: ``generic_train``, ``generic_valid``,
``target_train``, ``target_valid``, ``target_test``.

A reserved shard (``config.data.reserved_fraction`` > 0) splits generic_train in two
disjoint parts, by a stable hash of each document's position in it: the reserved shard,
which a reference model trains on (``config.data.generic_shard=reserved``; rho's), and
the rest, which every other run reads (``generic_shard=rest``), so a reference never
trains on a document that the run it scores for can draw.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Sequence
from typing import Any

from adaptive_data.data import prepared, tokenizer

SPLITS = ("generic_train", "generic_valid", "target_train", "target_valid", "target_test")
# The parts of generic_train under a reserved shard (``config.data.generic_shard``).
GENERIC_SHARDS = ("rest", "reserved")
GENERIC_DOMAIN = "generic"
TARGET_DOMAIN = "target"


class DataError(ValueError):
    """A data spec, file or dataset that cannot be used, with what to do about it."""


# The forms of a data spec, as error messages list them.
SPEC_FORMS = ("embedded", "tfds:NAME[/CONFIG][:VERSION]", "file:PATH.txt", "file:PATH.jsonl")


def is_valid_spec(spec) -> bool:
    """Whether ``spec`` has one of the ``SPEC_FORMS`` (the name or path is not checked)."""
    return isinstance(spec, str) and (
        spec == "embedded" or (spec.startswith(("tfds:", "file:")) and len(spec) > len("tfds:"))
    )


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Five splits, the domain vocabulary (index = domain id) and the target's domain."""

    splits: dict[str, Any]
    domains: tuple[str, ...]
    target_domain: str | None
    description: str

    def domain_id(self, name: str) -> int:
        return self.domains.index(name)


class RecordSource:
    """Random-access view of another source that yields normalised records.

    Each record becomes ``{"text": bytes, "domain": str, "doc_id": str}``; ``indices``
    restricts the view to a subset (used to split one file into train/valid/test).
    """

    def __init__(
        self,
        parent,
        *,
        text_key="text",
        domain_key=None,
        default_domain,
        id_prefix,
        indices: Sequence[int] | None = None,
        name: str = "",
    ):
        self._parent = parent
        self._text_key = text_key
        self._domain_key = domain_key
        self._default_domain = default_domain
        self._id_prefix = id_prefix
        self._indices = list(indices) if indices is not None else None
        self._name = name

    def __len__(self) -> int:
        return len(self._indices) if self._indices is not None else len(self._parent)

    def __getitem__(self, index: int) -> dict[str, Any]:
        parent_index = self._indices[index] if self._indices is not None else index
        record = self._parent[parent_index]
        if self._text_key not in record:
            raise DataError(
                f"{self._name}: record {parent_index} has no text field {self._text_key!r} "
                f"(fields: {sorted(record)}); set config.data.text_key to the right field."
            )
        domain = self._default_domain
        if self._domain_key and self._domain_key in record:
            domain = _as_str(record[self._domain_key])
        doc_id = (
            _as_str(record["doc_id"])
            if "doc_id" in record
            else (f"{self._id_prefix}#{parent_index}")
        )
        return {
            "text": tokenizer.to_bytes(record[self._text_key]),
            "domain": domain,
            "doc_id": doc_id,
        }

    def __repr__(self) -> str:
        return f"RecordSource({self._name}, {len(self)} docs)"


def _as_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _stable_fraction(key: str) -> float:
    """A deterministic pseudo-random number in [0, 1) from a string (split assignment)."""
    digest = hashlib.sha256(key.encode("utf-8", errors="replace")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


# ---------------------------------------------------------------------------- files


def read_text_file(path: str, *, text_key: str = "text") -> list[dict[str, Any]]:
    """Reads ``.txt`` (a document per non-empty line) or ``.jsonl`` into records.

    Bytes that are not valid UTF-8 are replaced (U+FFFD), never fatal. Raises DataError
    naming the file for a missing or empty file, invalid JSON, or a missing text field.
    """
    file_path = pathlib.Path(path).expanduser()
    if not file_path.is_file():
        raise DataError(f"Data file {str(file_path)!r} does not exist (from spec 'file:{path}').")
    raw_lines = file_path.read_bytes().decode("utf-8", errors="replace").splitlines()
    records = []
    is_jsonl = file_path.suffix.lower() in (".jsonl", ".json")
    for line_number, line in enumerate(raw_lines, start=1):
        if not line.strip():
            continue
        if not is_jsonl:
            records.append({"text": line, "doc_id": f"{file_path.name}:{line_number}"})
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{file_path}:{line_number}: not valid JSON ({e.msg}).") from e
        if not isinstance(obj, dict) or text_key not in obj:
            raise DataError(
                f"{file_path}:{line_number}: missing text field {text_key!r}; every JSONL line "
                f"needs it (set config.data.text_key if your field has another name)."
            )
        record = {
            "text": str(obj[text_key]),
            "doc_id": str(obj.get("doc_id", f"{file_path.name}:{line_number}")),
        }
        if "domain" in obj:
            record["domain"] = str(obj["domain"])
        records.append(record)
    if not records:
        raise DataError(
            f"Data file {str(file_path)!r} holds no documents (it is empty or only blank lines)."
        )
    return records


def _split_by_hash(records, fractions: dict[str, float], salt: str) -> dict[str, list[int]]:
    """Deterministically assigns record indices to named splits with the given fractions."""
    names = list(fractions)
    bounds, total = [], 0.0
    for name in names:
        total += fractions[name]
        bounds.append(total)
    assignment = {name: [] for name in names}
    for i, record in enumerate(records):
        u = _stable_fraction(f"{salt}/{record['doc_id']}/{i}") * total
        for name, bound in zip(names, bounds):
            if u < bound:
                assignment[name].append(i)
                break
    return assignment


# ---------------------------------------------------------------------------- tfds


def _damaged_dataset_error(
    name: str, split: str, directory, reason: str, key: str, data_dir: str | None
) -> DataError:
    build_dir = f" --data_dir={data_dir}" if data_dir else ""
    return DataError(
        f"The prepared TFDS dataset {name!r} (from {key}), split {split!r}, in {directory} "
        f"cannot be read: {reason}. Its files are damaged or incomplete (a full disk, an "
        "interrupted copy); nothing was changed. Restore the directory from a copy, or "
        f"move it away and prepare the dataset again (`tfds build {name.split(':')[0]} "
        f"--file_format=array_record{build_dir}`)."
    )


def _prepared_copies(name: str, data_dir: str | None) -> list[pathlib.Path]:
    """Directories of ``name`` (``NAME[/CONFIG][:VERSION]``) under the TFDS data dirs."""
    relative = name.split(":")[0]
    return [
        pathlib.Path(d) / relative
        for d in prepared.tfds_data_dirs(data_dir)
        if "://" not in str(d) and (pathlib.Path(d) / relative).is_dir()
    ]


def _tfds_source(name: str, split: str, data_dir: str | None, spec: str, role: str):
    import tensorflow_datasets as tfds

    key = f"config.data.{role}={spec!r}"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as e:
        dirs = ", ".join(repr(d) for d in prepared.tfds_data_dirs(data_dir))
        where = (
            f"config.data.tfds_data_dir={data_dir!r}"
            if data_dir
            else f"TFDS's default data dir {dirs} (TFDS_DATA_DIR, else ~/tensorflow_datasets; "
            "config.data.tfds_data_dir is not set)"
        )
        raise DataError(
            f"Unknown TFDS dataset {name!r} (from {key}): TFDS has no builder of that name "
            f"and no prepared copy of it is in {where}. Fix the name in config.data.{role}, "
            "or set config.data.tfds_data_dir to the directory holding the prepared dataset "
            "(`tfds build NAME --file_format=array_record --data_dir=DIR`)."
        ) from e
    except Exception as e:  # a known builder with a bad config or version, ...
        copies = _prepared_copies(name, data_dir)
        if copies:  # there is a prepared copy, but its metadata cannot be read
            reason = f"its metadata cannot be read ({type(e).__name__}: {e})"
            raise _damaged_dataset_error(name, split, copies[0], reason, key, data_dir) from e
        raise DataError(
            f"Unknown TFDS dataset {name!r} (from {key}), data dir "
            f"{', '.join(repr(d) for d in prepared.tfds_data_dirs(data_dir))}: {e}"
        ) from e
    if not builder.is_prepared():
        raise DataError(
            f"TFDS dataset {name!r} (from {key}) is not prepared in "
            f"data_dir={builder.data_dir_root!r}. Nothing is downloaded at run time: "
            f"prepare it first (e.g. `tfds build {name} --file_format=array_record`) or set "
            "config.data.tfds_data_dir to the directory holding it."
        )
    if split not in builder.info.splits:
        raise DataError(
            f"TFDS dataset {name!r} has no split {split!r}; it has "
            f"{sorted(builder.info.splits)}. Set the config.data.*_split keys."
        )
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise DataError(
            f"TFDS dataset {name!r} cannot be read by random access (it is prepared as "
            f"{builder.info.file_format.value}). Prepare it with --file_format=array_record."
        )
    damage = prepared.prepared_damage(builder, [split])
    if damage is not None:
        raise _damaged_dataset_error(name, split, builder.data_dir, damage, key, data_dir)
    try:
        return builder.as_data_source(split=split)
    except Exception as e:
        raise _damaged_dataset_error(
            name, split, builder.data_dir, f"{type(e).__name__}: {e}", key, data_dir
        ) from e


# ---------------------------------------------------------------------------- corpus


def _resolve(spec: str, role: str, data_cfg) -> tuple[dict[str, Any], set[str], str | None]:
    """Returns (splits of this role, domain names seen, domain of the target or None)."""
    names = (
        ("generic_train", "generic_valid")
        if role == "generic"
        else ("target_train", "target_valid", "target_test")
    )
    default_domain = GENERIC_DOMAIN if role == "generic" else TARGET_DOMAIN
    if spec == "embedded":
        from adaptive_data.data import embedded_corpus

        tfds_split = {
            "generic_train": "train",
            "generic_valid": "validation",
            "target_train": "target_train",
            "target_valid": "target_valid",
            "target_test": "target_test",
        }
        share = data_cfg.pool_target_share
        splits = {
            n: RecordSource(
                embedded_corpus.load_split(
                    data_cfg.task,
                    tfds_split[n],
                    pool_target_share=share,
                    max_target_train=data_cfg.max_target_train,
                    data_dir=data_cfg.tfds_data_dir,
                ),
                domain_key="domain",
                default_domain=default_domain,
                id_prefix="embedded",
                name=f"embedded:{data_cfg.task}/{tfds_split[n]}",
            )
            for n in names
        }
        target_domain = embedded_corpus.TASKS[data_cfg.task].target_domain
        return splits, set(embedded_corpus.DOMAINS), target_domain
    if spec.startswith("tfds:"):
        name = spec[len("tfds:") :]
        split_keys = {
            "generic_train": data_cfg.generic_train_split,
            "generic_valid": data_cfg.generic_valid_split,
            "target_train": data_cfg.target_train_split,
            "target_valid": data_cfg.target_valid_split,
            "target_test": data_cfg.target_test_split,
        }
        splits = {
            n: RecordSource(
                _tfds_source(name, split_keys[n], data_cfg.tfds_data_dir, spec, role),
                text_key=data_cfg.text_key,
                default_domain=default_domain,
                id_prefix=f"{name}/{split_keys[n]}",
                name=f"{spec}[{split_keys[n]}]",
            )
            for n in names
        }
        return splits, {default_domain}, (TARGET_DOMAIN if role == "target" else None)
    if spec.startswith("file:"):
        path = spec[len("file:") :]
        records = read_text_file(path, text_key=data_cfg.text_key)
        if role == "generic":
            fractions = {
                "generic_train": 1.0 - data_cfg.file_eval_fraction,
                "generic_valid": data_cfg.file_eval_fraction,
            }
        else:
            fractions = {
                "target_train": 1.0 - 2 * data_cfg.file_eval_fraction,
                "target_valid": data_cfg.file_eval_fraction,
                "target_test": data_cfg.file_eval_fraction,
            }
        assignment = _split_by_hash(records, fractions, salt=path)
        if role == "target":
            assignment["target_train"] = assignment["target_train"][: data_cfg.max_target_train]
        for n, indices in assignment.items():
            if not indices:
                raise DataError(
                    f"{path}: too few documents ({len(records)}) to fill split {n} "
                    f"with config.data.file_eval_fraction="
                    f"{data_cfg.file_eval_fraction}; add documents or raise it."
                )
        splits = {
            n: RecordSource(
                records,
                domain_key="domain",
                default_domain=default_domain,
                id_prefix=path,
                indices=assignment[n],
                name=spec,
            )
            for n in names
        }
        domains = {r.get("domain", default_domain) for r in records}
        single_domain = next(iter(domains)) if len(domains) == 1 else None
        return splits, domains, (single_domain if role == "target" else None)
    raise DataError(
        f"Unknown data spec {spec!r} for config.data.{role}: use "
        + ", ".join(repr(f) for f in SPEC_FORMS)
        + "."
    )


class Subset:
    """Random-access view of the records of ``source`` at ``indices``."""

    def __init__(self, source, indices: Sequence[int], name: str):
        self._source = source
        self._indices = list(indices)
        self._name = name

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._source[self._indices[index]]

    def __repr__(self) -> str:
        return f"Subset({self._name}, {len(self)} docs)"


def reserved_positions(num_documents: int, fraction: float) -> list[bool]:
    """Whether each position of generic_train is in the reserved shard: position i is
    iff a stable hash of i (sha256 of "reserved-shard#i", as a number in [0, 1)) is below
    ``fraction``; the same for every run of one data config, whatever its seed."""
    return [_stable_fraction(f"reserved-shard#{i}") < fraction for i in range(num_documents)]


def generic_train_shard(source, fraction: float, shard: str):
    """The part ``shard`` (one of ``GENERIC_SHARDS``) of generic_train ``source`` under a
    reserved shard of about ``fraction`` of its documents; ``source`` itself when
    ``fraction`` is 0."""
    if fraction <= 0:
        return source
    reserved = reserved_positions(len(source), fraction)
    keep = [i for i, r in enumerate(reserved) if r == (shard == "reserved")]
    if not keep:
        raise DataError(
            f"The {shard} part of generic_train ({len(source)} documents) under "
            f"config.data.reserved_fraction={fraction} is empty; choose a fraction that "
            "leaves documents on both sides."
        )
    return Subset(source, keep, name=f"{source!r}, {shard} part of {fraction:g}")


def load_corpus(data_cfg) -> Corpus:
    """Resolves ``config.data`` into a Corpus (see the module docstring)."""
    generic, generic_domains, _ = _resolve(data_cfg.generic, "generic", data_cfg)
    generic["generic_train"] = generic_train_shard(
        generic["generic_train"],
        float(data_cfg.get("reserved_fraction", 0.0)),
        data_cfg.get("generic_shard", "rest"),
    )
    target, target_domains, target_domain = _resolve(data_cfg.target, "target", data_cfg)
    if data_cfg.get("target_domain"):
        target_domain = data_cfg.target_domain
    domains = tuple(sorted(generic_domains | target_domains))
    for name, source in {**generic, **target}.items():
        if len(source) == 0:
            raise DataError(f"Split {name} of the data is empty ({source!r}).")
    return Corpus(
        splits={**generic, **target},
        domains=domains,
        target_domain=target_domain,
        description=f"generic={data_cfg.generic} target={data_cfg.target}",
    )

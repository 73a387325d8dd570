"""Prepared TFDS datasets on disk: where TFDS looks for them and whether a copy is intact.

The leaf both readers of prepared data share: ``sources`` (``tfds:`` specs) and
``embedded_corpus`` (the embedded corpus, prepared once as a TFDS dataset). It imports
neither of them.
"""

from __future__ import annotations

from collections.abc import Sequence


def tfds_data_dirs(data_dir: str | None) -> list[str]:
    """The data dirs TFDS looks in: ``data_dir``, or its defaults (``TFDS_DATA_DIR`` or
    ``~/tensorflow_datasets``, and any registered with ``tfds.core.add_data_dir``)."""
    try:
        from tensorflow_datasets.core.utils import file_utils

        return [str(d) for d in file_utils.list_data_dirs(data_dir)]
    except Exception:  # an internal helper: fall back to the documented defaults
        from tensorflow_datasets.core import constants

        return [data_dir or constants.get_default_data_dir()]


def prepared_damage(builder, splits: Sequence[str]) -> str | None:
    """Why the prepared array_record files of ``splits`` of a TFDS ``builder`` cannot be
    read, or None if each shard file is there and holds the number of records TFDS
    recorded for it when it was built (``shard_lengths`` in ``dataset_info.json``).

    Cheap: opening an array_record file reads only its footer. A truncated file (a full
    disk, a killed copy) opens with fewer records than recorded, or not at all.
    """
    from array_record.python import array_record_module

    for split in splits:
        if split not in builder.info.splits:
            return f"split {split!r} is missing from its metadata (dataset_info.json)"
        info = builder.info.splits[split]
        for path, expected in zip(info.filepaths, info.shard_lengths):
            if not path.exists():
                return f"split {split!r}: file {path.name} is missing"
            try:
                reader = array_record_module.ArrayRecordReader(str(path))
                try:
                    found = reader.num_records()
                finally:
                    reader.close()
            except Exception as error:  # riegeli raises several types for one cause
                detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                return f"split {split!r}: file {path.name} cannot be read ({detail})"
            if found != expected:
                return (
                    f"split {split!r}: file {path.name} holds {found} records of the "
                    f"{expected} written when it was built (truncated?)"
                )
    return None

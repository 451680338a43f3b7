"""The generation side of the store: faces, conditions (and their keys), images, generations and pairs."""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

from instantid import GenerationSettings  # torch-free: the one definition of the settings columns

from . import queries as q
from .errors import StoreIntegrityError
from .rows import Row, RowsBase, opt_float

_GENERATION_JSON = ("layers", "step_times", "versions")


def condition_inputs(*, prompt: str, seed: int, stack: str, **settings: Any) -> Row:
    """A condition's generation inputs as stored: the prompt, the seed, ``instantid.GenerationSettings``' fields
    (its own field list and types, never re-listed here; TypeError for a missing or unknown one) and the stack."""
    return {"prompt": prompt, "seed": int(seed), **GenerationSettings.typed(settings), "stack": stack}


def condition_key(face_sha256: str, **inputs: Any) -> str:
    """sha256 of every generation input (``condition_inputs``' keywords; the face by content hash, so keys are
    stable across databases)."""
    keyed = {"face_sha256": face_sha256, **condition_inputs(**inputs)}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def decode_generation(row: Row | None) -> Row | None:
    """A generations row with its JSON columns (layers, step_times, versions) decoded, in place."""
    if row is not None:
        for column in _GENERATION_JSON:
            row[column] = json.loads(row[column])
    return row



class GenerationRows(RowsBase):
    """Faces, conditions, images, generations and pairs (a mixin of ``Store``)."""

    def add_face(self, *, sha256: str, file: str, width: int, height: int, label: str | None = None) -> Row:
        """Add a reference face; an already stored sha256 returns the existing row unchanged."""
        row = {"sha256": sha256, "file": file, "label": label, "width": int(width), "height": int(height),
               "created_at": self._clock()}
        self._conn.write(lambda db: db.execute(q.INSERT_FACE, row))
        return self.get_face_by_sha(sha256)  # type: ignore[return-value]

    def get_face_by_sha(self, sha256: str) -> Row | None:
        """The face row with this content hash, or None."""
        return self._get("faces", "sha256 = ?", [sha256])

    def upsert_condition(self, *, face_id: int, **inputs: Any) -> Row:
        """The condition with these inputs (``condition_inputs``' keywords; key = ``condition_key(face sha,
        inputs)``); inserted when new."""
        inputs = condition_inputs(**inputs)

        def write(db: Database) -> str:
            face = db.execute("SELECT sha256 FROM faces WHERE id = ?", [face_id]).fetchone()
            if face is None:
                raise StoreIntegrityError(f"no face with id {face_id}")
            key = condition_key(face[0], **inputs)
            db.execute(q.INSERT_CONDITION, {**inputs, "key": key, "face_id": face_id,
                                            "created_at": self._clock()})
            return key

        key = self._conn.write(write)
        return self._get("conditions", "key = ?", [key])  # type: ignore[return-value]

    def get_condition(self, condition_id: int) -> Row | None:
        """The condition row with this id, or None."""
        return self._get("conditions", "id = ?", [condition_id])

    def get_condition_by_key(self, key: str) -> Row | None:
        """The condition stored under ``condition_key(...)``, or None (a lookup that writes nothing)."""
        return self._get("conditions", "key = ?", [key])

    def add_image(self, *, file: str, sha256: str, width: int, height: int) -> Row:
        """Record an image file written by ``review.images.write_image`` (opaque name, unique)."""
        row = {"file": file, "sha256": sha256, "width": int(width), "height": int(height),
               "created_at": self._clock()}
        return self._conn.write(lambda db: db["images"].get(db["images"].insert(row).last_pk))

    def add_generation(self, *, condition_id: int, preset: str, layers: Sequence[str], layer_count: int,
                       image_id: int, total_s: float, step_times: Sequence[float], device: str, dtype: str,
                       versions: dict[str, Any], run_id: str, id_cos_ref: float | None = None,
                       id_failure: str | None = None, timing_mode: str = "eager") -> Row:
        """One arm's output ('full' for the full arm). step_median_s is derived here from step_times;
        ``timing_mode``: how its steps ran (GenerationResult.timing_mode: 'graphs', 'eager' or 'mixed')."""
        times = [float(t) for t in step_times]
        row = {"condition_id": condition_id, "preset": preset, "layers": json.dumps(list(layers)),
               "layer_count": int(layer_count), "image_id": image_id, "total_s": float(total_s),
               "step_times": json.dumps(times), "step_median_s": statistics.median(times) if times else None,
               "device": device, "dtype": dtype, "versions": json.dumps(versions, sort_keys=True),
               "run_id": run_id, "id_cos_ref": opt_float(id_cos_ref), "id_failure": id_failure,
               "timing_mode": timing_mode, "created_at": self._clock()}
        stored = self._conn.write(lambda db: db["generations"].get(db["generations"].insert(row).last_pk))
        return decode_generation(stored)  # type: ignore[return-value]

    def get_generation(self, condition_id: int, preset: str) -> Row | None:
        """The generation of ``preset`` for this condition (JSON columns decoded), or None."""
        return decode_generation(self._get("generations", "condition_id = ? AND preset = ?",
                                            [condition_id, preset]))

    # -- pairs -----------------------------------------------------------------------------------------------
    def add_pair(self, *, full_generation_id: int, selective_generation_id: int, ssim: float,
                 id_cos_sel_full: float | None = None, id_cos_sel_ref: float | None = None,
                 id_cos_full_ref: float | None = None, identity_failure: str | None = None) -> Row:
        """Pair a full and a selective generation of one condition; condition, preset and layer count are
        taken from the selective generation (a trigger refuses arms of different conditions)."""

        def write(db: Database) -> Row:
            sel = db.execute("SELECT condition_id, preset, layer_count FROM generations WHERE id = ?",
                             [selective_generation_id]).fetchone()
            if sel is None:
                raise StoreIntegrityError(f"no generation with id {selective_generation_id}")
            row = {"condition_id": sel[0], "preset": sel[1], "layer_count": sel[2],
                   "full_generation_id": full_generation_id, "selective_generation_id": selective_generation_id,
                   "ssim": float(ssim), "id_cos_sel_full": opt_float(id_cos_sel_full),
                   "id_cos_sel_ref": opt_float(id_cos_sel_ref), "id_cos_full_ref": opt_float(id_cos_full_ref),
                   "identity_failure": identity_failure, "created_at": self._clock()}
            return db["pairs"].insert(row).last_pk

        pair_id = self._conn.write(write)
        return self._get("pairs", "id = ?", [pair_id])  # type: ignore[return-value]

    def get_pair(self, pair_id: int) -> Row | None:
        """One pair joined with its condition, both generations' timing/device/run and both image files."""
        rows = self._conn.rows(q.GET_PAIR, [pair_id])
        return rows[0] if rows else None

    def list_pairs(self) -> list[Row]:
        """Every pair as get_pair returns it (full_/sel_ step_median_s, total_s, device, dtype, run_id, file)."""
        return self._conn.rows(q.LIST_PAIRS)

    def get_face(self, face_id: int) -> Row | None:
        """The face row with this id, or None."""
        return self._get("faces", "id = ?", [face_id])

    def get_image(self, image_id: int) -> Row | None:
        """The image row with this id, or None."""
        return self._get("images", "id = ?", [image_id])

    def pairs_version(self) -> tuple[int, int]:
        """(pairs stored, highest pair id): changes whenever a pair is added or removed (cheap: no joins)."""
        row = self._conn.rows(q.PAIRS_VERSION)[0]
        return row["pairs"], row["last"]

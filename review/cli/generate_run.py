"""``python -m review generate``'s run: this process's share of the conditions, generated into the study.

Under ``accelerate launch`` every process runs ``run_generation`` on the same checked conditions; each loads its own
engine, takes its share (``review.generation.sharding``), checks faces and presets on its engine, generates, and
the main process prints one summary once every process is done.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from review.cli.common import error
from review.generation.conditions import Condition, InputError

if TYPE_CHECKING:
    from instantid import Engine
    from review.generation.jobs import PairRunner
    from review.generation.sharding import Shard
    from review.store import Store

logger = logging.getLogger(__name__)


def drop_bad_faces(conditions: list[Condition], bad: dict[Path, str]) -> list[Condition]:
    """The conditions whose face is not in ``bad`` (each bad face is reported once, by file name)."""
    for face, reason in bad.items():
        logger.warning("skipping %s: %s", face, reason)
    return [c for c in conditions if c.face not in bad]


@dataclass
class Outcome:
    """What one process did; gathered on the main process for the summary."""
    code: int = 0  # 0 done, 1 some conditions failed, 2 bad input / engine not loaded
    conditions: int = 0  # this process's share
    generated: int = 0
    added: int = 0
    failed: int = 0
    device: str = ""
    dtype: str = ""
    run_id: str = ""


def _load_engine(args: argparse.Namespace, part: Shard, mine: Outcome,
                 input_errors: tuple[type[Exception], ...]) -> Engine | None:
    """This process's engine, or None (no share of the conditions, or it failed to load: ``mine.code`` says)."""
    from instantid import load_engine

    if not part.conditions:  # more processes than conditions: the spare ones load nothing
        return None
    if args.device and part.device and args.device != part.device:
        logger.warning("process %d uses --device %s, not its own %s", part.process_index, args.device, part.device)
    try:
        return load_engine(args.stack, base=args.base, device=args.device or part.device, dtype=args.dtype,
                           face_model_root=args.face_model_root, cuda_graphs=args.cuda_graphs)
    except (*input_errors, OSError, ValueError) as exc:
        mine.code = error(f"cannot load the stack {args.stack!r}: {exc}")
        return None


def _open_store(db: Path, mine: Outcome) -> Store | None:
    """The study database for writing, or None (``mine.code`` says why)."""
    from review.store import Store, StoreError

    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        return Store(db)
    except (StoreError, OSError) as exc:
        mine.code = error(str(exc))
        return None


def _check_on_engine(runner: PairRunner, conditions: list[Condition], presets: list[str], bad: dict[Path, str],
                     input_errors: tuple[type[Exception], ...]) -> tuple[list[Condition], list[str]]:
    """The conditions whose face the engine finds usable (the others named in ``bad``) and the presets as the
    engine resolves them; ``input_errors`` when a preset does not resolve on its UNet."""
    from review.generation.inputs import check_faces

    for face in dict.fromkeys(c.face for c in conditions):
        try:
            check_faces(runner.engine, runner.check_face(face).image)  # no face / too small: named below
        except (*input_errors, InputError) as exc:
            bad[face] = f"{exc}"
    faces = {c.face for c in conditions}
    conditions = drop_bad_faces(conditions, {f: r for f, r in bad.items() if f in faces})
    return conditions, runner.check_presets(presets, {c.settings.ip_weight for c in conditions})


def run_generation(args: argparse.Namespace, conditions: list[Condition], presets: list[str], db: Path,
                   data_dir: Path, input_errors: tuple[type[Exception], ...], bad: dict[Path, str]) -> int:
    """Generate this process's share (all of it without a launcher); the main process prints the summary once
    every process is done. Every process reaches ``gather`` exactly once, whatever happens to its share."""
    from review.generation.jobs import PairRunner, summarize
    from review.generation.sharding import barrier, gather, shard

    part = shard(conditions, device=args.device)
    mine = Outcome(conditions=len(part.conditions))
    engine = _load_engine(args, part, mine, input_errors)
    store = _open_store(db, mine) if engine is not None else None
    if engine is None or store is None:
        barrier()
        gather(mine)
        return mine.code
    with store:
        runner = PairRunner(engine, store, data_dir, warmup=not args.no_warmup,
                            versions={"process_index": part.process_index, "num_processes": part.num_processes})
        mine.device, mine.dtype, mine.run_id = runner.device, runner.dtype, runner.run_id
        try:
            conditions, presets = _check_on_engine(runner, conditions, presets, bad, input_errors)
        except input_errors as exc:
            mine.code = error(str(exc))
        else:
            mine_part = [c for c in part.conditions if c.face not in bad]
            _generate(runner, mine_part, presets, mine, quiet=args.quiet or part.process_index != 0)
        barrier()
        everyone = gather(mine)
        if part.process_index != 0 or mine.code == 2:
            return mine.code
        if any(o.code == 2 for o in everyone):
            print("error: a process could not start (see its error above); its conditions were not generated",
                  file=sys.stderr)
        condition_ids = {row["id"] for row in map(runner.find_condition, conditions) if row is not None}
        summary = summarize([p for p in store.list_pairs() if p["condition_id"] in condition_ids])
    print(_summary_line(everyone, len(conditions), len(presets), summary, db))
    failed = sum(o.failed for o in everyone)
    if failed:
        print(f"error: {failed} condition(s) failed (see the log); re-run to retry them", file=sys.stderr)
    return max(o.code for o in everyone)


def _generate(runner: PairRunner, conditions: list[Condition], presets: list[str],
              mine: Outcome, quiet: bool) -> None:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from instantid import GenerationError

    arms = 1 + len(presets)
    with logging_redirect_tqdm(), tqdm(total=len(conditions) * arms, unit="arm", disable=quiet,
                                       desc="generate") as bar:
        for condition in conditions:
            start = bar.n

            def tick(label: str, where: str = f"{condition.face.name} {condition.size}") -> None:
                bar.set_postfix_str(f"{where} {label}", refresh=False)
                bar.update(1)

            try:
                mine.added += len(runner.run_condition(condition, presets, progress=tick))
            except GenerationError as exc:
                mine.failed += 1
                logger.error("%s seed %d %s: %s", condition.face.name, condition.seed, condition.size, exc)
                bar.update(start + arms - bar.n)
    mine.generated = runner.generated
    mine.code = 1 if mine.failed else 0


def _summary_line(everyone: list[Outcome], conditions: int, presets: int, summary: dict, db: Path) -> str:
    working = [o for o in everyone if o.run_id]
    if len(everyone) == 1:
        where = f"on {working[0].device} ({working[0].dtype}), run {working[0].run_id}"
    else:
        shares = "; ".join(f"process {i}: {o.conditions} condition(s) on {o.device or 'nothing'}"
                           for i, o in enumerate(everyone))
        dtypes = "/".join(dict.fromkeys(o.dtype for o in working))
        where = f"on {len(everyone)} processes ({shares}; {dtypes}), runs {', '.join(o.run_id for o in working)}"
    return (f"{conditions} conditions x {presets} presets {where}: generated {sum(o.generated for o in everyone)} "
            f"images, added {sum(o.added for o in everyone)} pairs; "
            f"{summary['pairs']} pairs in {db}, {summary['identity_failures']} identity failures"
            + (f", SSIM {summary['ssim_min']:.3f}..{summary['ssim_max']:.3f}" if summary["pairs"] else "")
            + (f", {summary['mixed_runs']} with arms from different runs" if summary["mixed_runs"] else ""))

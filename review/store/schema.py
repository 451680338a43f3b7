"""The study's schema as frozen migration functions: version N is ``MIGRATIONS[N - 1]`` (named ``vN_...``).

A released migration is never edited nor renamed (its function name is its key in ``_sqlite_migrations``); add a
new one at the end instead. ``review.store.migrations`` applies them through ``sqlite_utils.Migrations``. The SQL
here is exactly what every existing study database was built with.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlite_utils import Database

HEX32 = "length({c}) = 32 AND NOT {c} GLOB '*[^0-9a-f]*'"
PNG_NAME = "length({c}) = 36 AND substr({c}, 33) = '.png' AND NOT substr({c}, 1, 32) GLOB '*[^0-9a-f]*'"
SHA256 = "length({c}) = 64 AND NOT {c} GLOB '*[^0-9a-f]*'"
COSINE = "{c} IS NULL OR ({c} >= -1.0 AND {c} <= 1.0)"


def _ck(template: str, column: str) -> str:
    return f"CHECK ({template.format(c=column)})"


def _run(db: Database, statements: list[str]) -> None:
    for statement in statements:
        db.execute(statement)


def v1_core_tables(db: Database) -> None:
    """faces, conditions, images, generations, pairs, reviewers, trials, votes."""
    _run(db, [
        f"""CREATE TABLE faces (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE {_ck(SHA256, 'sha256')},
            file TEXT NOT NULL,
            label TEXT,
            width INTEGER NOT NULL CHECK (width > 0),
            height INTEGER NOT NULL CHECK (height > 0),
            created_at TEXT NOT NULL)""",
        f"""CREATE TABLE conditions (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE {_ck(SHA256, 'key')},
            face_id INTEGER NOT NULL REFERENCES faces(id),
            prompt TEXT NOT NULL,
            negative_prompt TEXT NOT NULL,
            seed INTEGER NOT NULL,
            steps INTEGER NOT NULL CHECK (steps > 0),
            width INTEGER NOT NULL CHECK (width > 0 AND width % 8 = 0),
            height INTEGER NOT NULL CHECK (height > 0 AND height % 8 = 0),
            ip_weight REAL NOT NULL,
            cn_scale REAL NOT NULL,
            guidance_scale REAL NOT NULL,
            stack TEXT NOT NULL CHECK (length(stack) > 0),
            created_at TEXT NOT NULL)""",
        f"""CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            file TEXT NOT NULL UNIQUE {_ck(PNG_NAME, 'file')},
            sha256 TEXT NOT NULL {_ck(SHA256, 'sha256')},
            width INTEGER NOT NULL CHECK (width > 0),
            height INTEGER NOT NULL CHECK (height > 0),
            created_at TEXT NOT NULL)""",
        """CREATE TABLE generations (
            id INTEGER PRIMARY KEY,
            condition_id INTEGER NOT NULL REFERENCES conditions(id),
            preset TEXT NOT NULL CHECK (length(preset) > 0),
            layers TEXT NOT NULL CHECK (json_valid(layers) AND json_type(layers) = 'array'),
            layer_count INTEGER NOT NULL CHECK (layer_count >= 0),
            image_id INTEGER NOT NULL UNIQUE REFERENCES images(id),
            total_s REAL NOT NULL CHECK (total_s >= 0),
            step_times TEXT NOT NULL CHECK (json_valid(step_times) AND json_type(step_times) = 'array'),
            step_median_s REAL CHECK (step_median_s IS NULL OR step_median_s >= 0),
            device TEXT NOT NULL,
            dtype TEXT NOT NULL,
            versions TEXT NOT NULL CHECK (json_valid(versions) AND json_type(versions) = 'object'),
            run_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (condition_id, preset))""",
        """CREATE TABLE pairs (
            id INTEGER PRIMARY KEY,
            condition_id INTEGER NOT NULL REFERENCES conditions(id),
            preset TEXT NOT NULL CHECK (length(preset) > 0 AND preset <> 'full'),
            layer_count INTEGER NOT NULL CHECK (layer_count >= 0),
            full_generation_id INTEGER NOT NULL REFERENCES generations(id),
            selective_generation_id INTEGER NOT NULL REFERENCES generations(id),
            ssim REAL NOT NULL CHECK (ssim >= -1.0 AND ssim <= 1.0),
            created_at TEXT NOT NULL,
            UNIQUE (condition_id, preset),
            CHECK (full_generation_id <> selective_generation_id))""",
        """CREATE TABLE reviewers (
            id TEXT PRIMARY KEY CHECK (length(id) > 0),
            created_at TEXT NOT NULL,
            last_seen TEXT NOT NULL)""",
        f"""CREATE TABLE trials (
            id TEXT PRIMARY KEY {_ck(HEX32, 'id')},
            reviewer_id TEXT NOT NULL REFERENCES reviewers(id),
            session TEXT NOT NULL,
            pair_id INTEGER NOT NULL REFERENCES pairs(id),
            mode TEXT NOT NULL CHECK (mode IN ('preference', 'abx')),
            left_arm TEXT NOT NULL CHECK (left_arm IN ('full', 'selective')),
            x_arm TEXT CHECK (x_arm IN ('full', 'selective')),
            left_image TEXT NOT NULL {_ck(PNG_NAME, 'left_image')},
            right_image TEXT NOT NULL {_ck(PNG_NAME, 'right_image')},
            x_image TEXT {_ck(PNG_NAME, 'x_image')},
            created_at TEXT NOT NULL,
            CHECK (left_image <> right_image),
            CHECK ((mode = 'abx') = (x_arm IS NOT NULL AND x_image IS NOT NULL)),
            CHECK (mode = 'abx' OR (x_arm IS NULL AND x_image IS NULL)))""",
        """CREATE TABLE votes (
            id INTEGER PRIMARY KEY,
            trial_id TEXT NOT NULL UNIQUE REFERENCES trials(id),
            reviewer_id TEXT NOT NULL REFERENCES reviewers(id),
            choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'same', 'a', 'b')),
            outcome TEXT NOT NULL CHECK (outcome IN ('selective', 'full', 'same', 'correct', 'wrong')),
            correct INTEGER CHECK (correct IN (0, 1)),
            client TEXT,
            created_at TEXT NOT NULL)""",
    ])


_VOTE_FITS_TRIAL = """
    SELECT RAISE(ABORT, 'vote for an unknown trial')
        WHERE NOT EXISTS (SELECT 1 FROM trials WHERE id = NEW.trial_id);
    SELECT RAISE(ABORT, 'vote reviewer differs from the trial reviewer')
        WHERE NEW.reviewer_id <> (SELECT reviewer_id FROM trials WHERE id = NEW.trial_id);
    SELECT RAISE(ABORT, 'vote choice/outcome/correct do not fit the trial mode and arms')
        WHERE NOT EXISTS (SELECT 1 FROM trials t WHERE t.id = NEW.trial_id AND (
            (t.mode = 'preference' AND t.is_gold = 1 AND NEW.choice IN ('left', 'right', 'same')
                AND NEW.outcome IN ('selective', 'full', 'same') AND (NEW.choice = 'same') = (NEW.outcome = 'same'))
            OR (t.mode = 'preference' AND t.is_gold = 0 AND (
                (NEW.choice = 'same' AND NEW.outcome = 'same')
                OR (NEW.choice = 'left' AND NEW.outcome = t.left_arm)
                OR (NEW.choice = 'right' AND NEW.outcome IN ('full', 'selective') AND NEW.outcome <> t.left_arm)))
            OR (t.mode = 'abx' AND NEW.choice IN ('a', 'b')
                AND NEW.outcome = CASE WHEN (NEW.choice = 'a') = (t.left_arm = t.x_arm)
                                       THEN 'correct' ELSE 'wrong' END
                AND (NEW.correct IS NULL OR NEW.correct = (NEW.outcome = 'correct')))));
"""

_PAIR_FITS_GENERATIONS = """
    SELECT RAISE(ABORT, 'pair arms must be the full and the selective generation of one condition')
        WHERE NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = NEW.full_generation_id
                          AND g.condition_id = NEW.condition_id AND g.preset = 'full')
           OR NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = NEW.selective_generation_id
                          AND g.condition_id = NEW.condition_id AND g.preset = NEW.preset
                          AND g.layer_count = NEW.layer_count);
"""


def v2_identity_latency_gold(db: Database) -> None:
    """Identity columns, vote latency, gold trials, consistency triggers and the picker's indexes."""
    _run(db, [
        f"ALTER TABLE generations ADD COLUMN id_cos_ref REAL {_ck(COSINE, 'id_cos_ref')}",
        "ALTER TABLE generations ADD COLUMN id_failure TEXT",
        f"ALTER TABLE pairs ADD COLUMN id_cos_sel_full REAL {_ck(COSINE, 'id_cos_sel_full')}",
        f"ALTER TABLE pairs ADD COLUMN id_cos_sel_ref REAL {_ck(COSINE, 'id_cos_sel_ref')}",
        f"ALTER TABLE pairs ADD COLUMN id_cos_full_ref REAL {_ck(COSINE, 'id_cos_full_ref')}",
        "ALTER TABLE pairs ADD COLUMN identity_failure TEXT",
        "ALTER TABLE trials ADD COLUMN is_gold INTEGER NOT NULL DEFAULT 0 CHECK (is_gold IN (0, 1))",
        "ALTER TABLE votes ADD COLUMN latency_ms INTEGER CHECK (latency_ms IS NULL OR latency_ms >= 0)",
        "CREATE INDEX idx_conditions_face ON conditions(face_id)",
        "CREATE INDEX idx_pairs_preset ON pairs(preset)",
        "CREATE INDEX idx_trials_pair ON trials(pair_id)",
        "CREATE INDEX idx_trials_reviewer ON trials(reviewer_id, pair_id)",
        "CREATE INDEX idx_votes_reviewer ON votes(reviewer_id)",
        f"CREATE TRIGGER votes_fit_trial BEFORE INSERT ON votes BEGIN {_VOTE_FITS_TRIAL} END",
        f"CREATE TRIGGER pairs_fit_generations BEFORE INSERT ON pairs BEGIN {_PAIR_FITS_GENERATIONS} END",
    ])


_KINDS = "('legacy', 'anonymous', 'invite', 'hf')"

_VOTE_FITS_TRIAL_V3 = """
    SELECT RAISE(ABORT, 'vote for an unknown trial')
        WHERE NOT EXISTS (SELECT 1 FROM trials WHERE id = NEW.trial_id);
    SELECT RAISE(ABORT, 'vote reviewer differs from the trial reviewer')
        WHERE NEW.reviewer_id <> (SELECT reviewer_id FROM trials WHERE id = NEW.trial_id);
    SELECT RAISE(ABORT, 'vote choice/outcome/correct do not fit the trial mode and arms')
        WHERE NOT EXISTS (SELECT 1 FROM trials t WHERE t.id = NEW.trial_id AND (
            (t.expected IS NOT NULL
                AND ((t.mode = 'preference' AND NEW.choice IN ('left', 'right', 'same'))
                     OR (t.mode = 'abx' AND NEW.choice IN ('a', 'b')))
                AND NEW.outcome = CASE WHEN NEW.choice = t.expected THEN 'correct' ELSE 'wrong' END
                AND NEW.correct IS NOT NULL AND NEW.correct = (NEW.choice = t.expected))
            OR (t.expected IS NULL AND t.mode = 'preference' AND t.is_gold = 1
                AND NEW.choice IN ('left', 'right', 'same')
                AND NEW.outcome IN ('selective', 'full', 'same') AND (NEW.choice = 'same') = (NEW.outcome = 'same'))
            OR (t.expected IS NULL AND t.mode = 'preference' AND t.is_gold = 0 AND (
                (NEW.choice = 'same' AND NEW.outcome = 'same')
                OR (NEW.choice = 'left' AND NEW.outcome = t.left_arm)
                OR (NEW.choice = 'right' AND NEW.outcome IN ('full', 'selective') AND NEW.outcome <> t.left_arm)))
            OR (t.expected IS NULL AND t.mode = 'abx' AND NEW.choice IN ('a', 'b')
                AND NEW.outcome = CASE WHEN (NEW.choice = 'a') = (t.left_arm = t.x_arm)
                                       THEN 'correct' ELSE 'wrong' END
                AND (NEW.correct IS NULL OR NEW.correct = (NEW.outcome = 'correct')))));
"""


def v3_blinding_identity_settings(db: Database) -> None:
    """Study settings (key/value, the install secret), invites, identity kinds, gold kinds with their expected
    answer, the reveal setting a trial was served under; gold votes are 'correct'/'wrong' against ``expected``."""
    _run(db, [
        "CREATE TABLE settings (key TEXT PRIMARY KEY CHECK (length(key) > 0), value TEXT NOT NULL)",
        f"""CREATE TABLE invites (
            id TEXT PRIMARY KEY {_ck(HEX32, 'id')},
            created_at TEXT NOT NULL,
            expires_at TEXT,
            reviewer_id TEXT UNIQUE REFERENCES reviewers(id),
            used_at TEXT,
            CHECK ((reviewer_id IS NULL) = (used_at IS NULL)))""",
        f"ALTER TABLE reviewers ADD COLUMN identity_kind TEXT NOT NULL DEFAULT 'legacy' "
        f"CHECK (identity_kind IN {_KINDS})",
        f"ALTER TABLE trials ADD COLUMN identity_kind TEXT NOT NULL DEFAULT 'legacy' "
        f"CHECK (identity_kind IN {_KINDS})",
        "ALTER TABLE trials ADD COLUMN gold_kind TEXT "
        "CHECK (gold_kind IS NULL OR gold_kind IN ('identical', 'degraded'))",
        "ALTER TABLE trials ADD COLUMN expected TEXT "
        "CHECK (expected IS NULL OR expected IN ('left', 'right', 'same', 'a', 'b'))",
        "ALTER TABLE trials ADD COLUMN reveal TEXT CHECK (reveal IS NULL OR reveal IN ('none', 'end', 'each'))",
        "DROP TRIGGER votes_fit_trial",
        f"CREATE TRIGGER votes_fit_trial BEFORE INSERT ON votes BEGIN {_VOTE_FITS_TRIAL_V3} END",
        """CREATE TRIGGER trials_gold_fits BEFORE INSERT ON trials
            WHEN (NEW.gold_kind IS NOT NULL) <> (NEW.expected IS NOT NULL)
              OR (NEW.gold_kind IS NOT NULL AND NEW.is_gold = 0)
              OR (NEW.gold_kind = 'identical' AND NEW.expected <> 'same')
              OR (NEW.mode = 'abx' AND NEW.expected NOT IN ('a', 'b'))
              OR (NEW.mode = 'preference' AND NEW.expected IN ('a', 'b'))
            BEGIN SELECT RAISE(ABORT, 'gold kind and expected answer do not fit the trial'); END""",
    ])


def v4_timing_mode(db: Database) -> None:
    """How each generation's steps ran and were timed: 'graphs' (captured CUDA graphs), 'eager' or 'mixed' (a
    capture fell back mid-generation). Rows from before are eager (the engine had no graphs)."""
    _run(db, ["ALTER TABLE generations ADD COLUMN timing_mode TEXT NOT NULL DEFAULT 'eager' "
              "CHECK (timing_mode IN ('eager', 'graphs', 'mixed'))"])


Migration = Callable[[Database], None]
MIGRATIONS: tuple[Migration, ...] = (v1_core_tables, v2_identity_latency_gold, v3_blinding_identity_settings,
                                  v4_timing_mode)
LATEST = len(MIGRATIONS)

"""The read-side SQL: joined, flat rows for the UI, the statistics module and exports."""

from __future__ import annotations

from instantid import GenerationSettings  # torch-free

PAIR_COLUMNS = """
    p.id AS pair_id, p.condition_id, p.preset, p.layer_count, p.ssim,
    p.id_cos_sel_full, p.id_cos_sel_ref, p.id_cos_full_ref, p.identity_failure, p.created_at,
    c.face_id, f.label AS face_label, c.prompt, c.negative_prompt, c.seed, c.steps, c.width, c.height,
    c.ip_weight, c.cn_scale, c.guidance_scale, c.stack,
    p.full_generation_id, p.selective_generation_id,
    gf.step_median_s AS full_step_median_s, gs.step_median_s AS sel_step_median_s,
    gf.total_s AS full_total_s, gs.total_s AS sel_total_s,
    gf.device AS full_device, gs.device AS sel_device, gf.dtype AS full_dtype, gs.dtype AS sel_dtype,
    gf.run_id AS full_run_id, gs.run_id AS sel_run_id,
    gf.timing_mode AS full_timing_mode, gs.timing_mode AS sel_timing_mode,
    gf.id_cos_ref AS full_id_cos_ref, gs.id_cos_ref AS sel_id_cos_ref,
    imf.file AS full_file, ims.file AS sel_file"""

PAIR_JOINS = """
    FROM pairs p
    JOIN conditions c ON c.id = p.condition_id
    JOIN faces f ON f.id = c.face_id
    JOIN generations gf ON gf.id = p.full_generation_id
    JOIN generations gs ON gs.id = p.selective_generation_id
    JOIN images imf ON imf.id = gf.image_id
    JOIN images ims ON ims.id = gs.image_id"""

LIST_PAIRS = f"SELECT {PAIR_COLUMNS} {PAIR_JOINS} ORDER BY p.id"
GET_PAIR = f"SELECT {PAIR_COLUMNS} {PAIR_JOINS} WHERE p.id = ?"

# Vote/trial counts for a balanced picker. Trials are filtered by :mode (NULL = any) and :gold (1 = include gold).
_COUNT_GROUPS = {
    "pair": ("p.id AS pair_id, p.condition_id, p.preset, p.layer_count", "p.id"),
    "preset": ("p.preset", "p.preset"),
    "condition": ("p.condition_id", "p.condition_id"),
}
COUNTS = {
    by: f"""SELECT {columns}, COUNT(DISTINCT p.id) AS pairs, COUNT(t.id) AS trials, COUNT(v.id) AS votes
            FROM pairs p
            LEFT JOIN trials t ON t.pair_id = p.id AND (:mode IS NULL OR t.mode = :mode)
                 AND (:gold = 1 OR t.is_gold = 0)
            LEFT JOIN votes v ON v.trial_id = t.id
            GROUP BY {group} ORDER BY {group}"""
    for by, (columns, group) in _COUNT_GROUPS.items()
}

PAIRS_SEEN = """SELECT t.pair_id, COUNT(*) AS trials FROM trials t
    WHERE t.reviewer_id = :reviewer AND (:mode IS NULL OR t.mode = :mode)
    GROUP BY t.pair_id ORDER BY t.pair_id"""

_TRIAL_COLUMNS = """
    t.id AS trial_id, t.reviewer_id, t.session, t.mode, t.left_arm, t.x_arm, t.is_gold, t.created_at AS served_at,
    t.gold_kind, t.expected, t.identity_kind, t.reveal,
    p.id AS pair_id, p.preset, p.layer_count, p.condition_id, p.ssim,
    p.id_cos_sel_full, p.id_cos_sel_ref, p.id_cos_full_ref, p.identity_failure,
    c.face_id, c.prompt, c.seed, c.steps, c.width, c.height, c.stack"""

_VOTE_COLUMNS = """
    v.id AS vote_id, v.choice, v.outcome, v.correct, v.latency_ms, v.client, v.created_at AS voted_at"""

VOTE_ROWS = f"""SELECT {_VOTE_COLUMNS}, {_TRIAL_COLUMNS}
    FROM votes v JOIN trials t ON t.id = v.trial_id
    JOIN pairs p ON p.id = t.pair_id JOIN conditions c ON c.id = p.condition_id
    ORDER BY v.id"""

TRIAL_ROWS = f"""SELECT {_TRIAL_COLUMNS}, t.left_image, t.right_image, t.x_image, {_VOTE_COLUMNS}
    FROM trials t LEFT JOIN votes v ON v.trial_id = t.id
    JOIN pairs p ON p.id = t.pair_id JOIN conditions c ON c.id = p.condition_id
    ORDER BY t.created_at, t.id"""

INSERT_FACE = """INSERT INTO faces (sha256, file, label, width, height, created_at)
    VALUES (:sha256, :file, :label, :width, :height, :created_at) ON CONFLICT(sha256) DO NOTHING"""

# a condition's columns: key, face, prompt, seed, GenerationSettings' fields (the one definition), stack
_CONDITION_COLUMNS = ("key", "face_id", "prompt", "seed", *GenerationSettings.names(), "stack", "created_at")
INSERT_CONDITION = (f"INSERT INTO conditions ({', '.join(_CONDITION_COLUMNS)}) "
                    f"VALUES ({', '.join(':' + c for c in _CONDITION_COLUMNS)}) ON CONFLICT(key) DO NOTHING")

UPSERT_REVIEWER = """INSERT INTO reviewers (id, created_at, last_seen, identity_kind) VALUES (:id, :now, :now, :kind)
    ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen"""

TOUCH_REVIEWER = "UPDATE reviewers SET last_seen = :now WHERE id = :id"

PAIRS_VERSION = "SELECT count(*) AS pairs, coalesce(max(id), 0) AS last FROM pairs"

STUDY_VERSION = "SELECT (SELECT count(*) FROM pairs) AS pairs, (SELECT count(*) FROM votes) AS votes"

PUT_SETTING = """INSERT INTO settings (key, value) VALUES (:key, :value)
    ON CONFLICT(key) DO UPDATE SET value = excluded.value"""

CLAIM_INVITE = """UPDATE invites SET reviewer_id = :reviewer, used_at = :now
    WHERE id = :id AND reviewer_id IS NULL AND (expires_at IS NULL OR expires_at > :now)"""

"""The Generate tab (admin only): upload a face, write a prompt, pick presets, seeds and settings, make pairs.

The admin password (``REVIEW_ADMIN_PASSWORD``) is checked on the server by every handler on every call
(``Services.check_admin``: constant-time compare, failures rate-limited per address). One successful unlock makes
the page (its Gradio session) an admin page on the server: Generate, Export and the leaderboard then need no
password again. A Hugging Face user on ``REVIEW_HF_ADMINS`` unlocks by logging in.
Preset names reach the page only after a successful unlock, so a reviewer's page never carries them.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import secrets
from pathlib import Path
from typing import Any

import gradio as gr

from instantid import FaceError, GenerationSettings
from review.generation.inputs import InputError, Limits, validate_settings
from review.generation.uploads import read_upload
from review.store import StoreError
from review.study.services import GenerateJob, JobStopped, Services, storage_message
from review.study.trials import VoteRefused
from review.ui.review_tab import request_address

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["pair_id", "preset", "seed", "layer_count", "ssim", "note"]


def make_job(services: Services, face: Any, prompt: Any, negative: Any, presets: Any, custom: Any, seeds: Any,
             steps: Any, width: Any, height: Any, ip_weight: Any, cn_scale: Any, guidance: Any) -> GenerateJob:
    """Check the form and build the job; VoteRefused with a readable message otherwise."""
    if not isinstance(face, str) or not face:
        raise VoteRefused("Upload a reference face first.")
    chosen = [str(p) for p in presets] if isinstance(presets, list) else []  # the dropdown, then the text box
    try:  # the same checks and messages as the batch CLI: review/generation/inputs.py, then uploads.py
        submission = validate_settings(prompt, negative, [*chosen, str(custom or "")], seeds, steps, width, height,
                                       ip_weight, cn_scale, guidance, limits=form_limits(services))  # cheap: first
        upload = read_upload(face)  # header-only size check, then a capped decode (never Gradio's)
    except InputError as exc:
        raise VoteRefused(str(exc)) from None
    folder = services.dirs.root / "uploads"
    face_path = folder / f"{secrets.token_hex(16)}.png"  # the decoded, upright RGB upload (removed after the job)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        upload.image.save(face_path, format="PNG")
    except OSError as exc:  # e.g. ENOSPC: no partial file stays behind
        face_path.unlink(missing_ok=True)
        raise VoteRefused(f"The upload could not be saved on the server: {disk_problem(exc)}.") from None
    notes = [*upload.notes, *submission.notes]
    known = services.store.get_face_by_sha(hashlib.sha256(face_path.read_bytes()).hexdigest())
    if known is not None:  # the runner keys faces by the same hash: the stored face is reused, not copied again
        notes.append(f"this face is already in the study (face #{known['id']}); its stored copy is reused")
    return GenerateJob(face_path=str(face_path), submission=submission, notes=tuple(notes))


def disk_problem(exc: OSError) -> str:
    """An OSError in words: the disk full / read-only cases named as such."""
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == errno.EROFS:
        return "the storage is read-only"
    return exc.strerror or str(exc)


def job_failure(exc: Exception) -> str:
    """What the admin reads when a generation job fails (stopped, storage fault, disk full, anything else)."""
    if isinstance(exc, JobStopped):
        logger.warning("generation stopped: %s", exc)
        return f"Generation stopped: {exc}."
    if isinstance(exc, FaceError):  # no face / unreadable: the photo, not the generation, is the problem
        logger.info("reference photo refused: %s", exc)
        return f"The reference photo cannot be used: {exc}"
    if isinstance(exc, StoreError):
        logger.error("generation failed on the store: %s", exc)
        return storage_message(exc, "Generation stopped; the pairs finished before it are kept, nothing else was "
                                    "saved.")
    if isinstance(exc, OSError):
        logger.error("generation failed: %s", exc)
        return f"Generation failed: {disk_problem(exc)}; the pairs finished before it are kept, no partial file."
    logger.exception("generation failed")
    return f"Generation failed: {exc}"


def form_limits(services: Services) -> Limits:
    """The limits of this app's form: instantid's, with the app's own caps on size and seeds."""
    base = Limits()
    return Limits(max_size=min(base.max_size, services.config.max_side),
                  max_seeds=min(base.max_seeds, services.config.max_seeds))


def handlers(services: Services) -> dict[str, Any]:
    """The tab's event handlers: unlock and generate (each checks the admin on the server)."""
    def unlock(password: Any, request: gr.Request, profile: gr.OAuthProfile | None = None) -> list[Any]:
        try:
            if profile is None or not services.grant_admin(request.session_hash, profile.username):
                services.check_admin(password, request_address(request, services), request.session_hash)
        except VoteRefused as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        choices = list(services.config.preset_choices)
        ready = "" if services.run_job else " Generation is not available in this app (no engine)."
        return [gr.Column(visible=True), gr.Dropdown(choices=choices, value=choices[:2]),
                f"Unlocked (stack: `{services.config.stack}`).{ready}"]

    def generate(password: Any, face: Any, prompt: Any, negative: Any, presets: Any, custom: Any, seeds: Any,
                 steps: Any, width: Any, height: Any, ip_weight: Any, cn_scale: Any, guidance: Any,
                 request: gr.Request, progress: gr.Progress = gr.Progress()) -> list[Any]:
        try:
            services.check_admin(password, request_address(request, services), request.session_hash)
            if services.run_job is None:
                raise VoteRefused("Generation is not available in this app (no engine).")
            job = make_job(services, face, prompt, negative, presets, custom, seeds, steps, width, height,
                           ip_weight, cn_scale, guidance)
        except VoteRefused as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        if services.stopping.is_set() or not services.generate_lock.acquire(blocking=False):
            Path(job.face_path).unlink(missing_ok=True)
            raise gr.Error("The app is shutting down; generation is not accepted now." if services.stopping.is_set()
                           else "Another generation is running; try again when it is done.", print_exception=False)
        try:
            progress(0.0, desc="Starting")
            rows = services.run_job(job, lambda fraction, text: progress(fraction, desc=text))
        except Exception as exc:  # noqa: BLE001 - the job's boundary: any failure becomes the admin's message (logged)
            raise gr.Error(job_failure(exc), print_exception=False) from None
        finally:
            services.generate_lock.release()
            Path(job.face_path).unlink(missing_ok=True)  # the runner keeps its own copy of the face
        table = [[r.get(c) for c in RESULT_COLUMNS] for r in rows]
        notes = "".join(f" Note: {n}" for n in job.notes)
        made = (f"Made {len(rows)} pair(s); they are now in the review rotation." if rows else
                "Made no new pair: every pair of these settings is already in the study (same face, prompt, "
                "seeds and presets).")
        return [f"{made}{notes}", table]

    return {"unlock": unlock, "generate": generate}


def build_generate_tab(services: Services) -> None:
    """The Generate tab; call inside ``gr.Tabs()``."""
    fns, enabled = handlers(services), bool(services.config.admin_password)
    limits = form_limits(services)  # the widgets offer exactly what the server accepts
    defaults = GenerationSettings()  # and start at the settings' own defaults
    with gr.Tab("Generate", id="generate"):
        gr.Markdown("Admin only. The password is checked on the server for every action." if enabled else
                    "Generation is disabled: no admin password is configured (set REVIEW_ADMIN_PASSWORD).")
        if services.config.hf_admins:  # admins on the allow-list unlock by logging in, then pressing Unlock
            gr.LoginButton()
        password = gr.Textbox(label="Admin password", type="password", interactive=enabled,
                              elem_id="admin-password")
        unlock = gr.Button("Unlock", interactive=enabled)
        message = gr.Markdown("")
        with gr.Column(visible=False) as form:
            with gr.Row():
                # a file input, not gr.Image: Gradio would decode and convert every upload before the password
                # and the limits are checked (and clip 16-bit, ignore alpha); review.generation.uploads reads it instead
                face = gr.File(label="Reference face (PNG, JPEG or WebP photo)", type="filepath",
                               file_types=["image"], file_count="single")
                with gr.Column():
                    prompt = gr.Textbox(label="Prompt", lines=2, max_length=limits.max_prompt_chars)
                    negative = gr.Textbox(defaults.negative_prompt, label="Negative prompt", lines=1,
                                          max_length=limits.max_prompt_chars)
            # choices arrive with the unlock; custom values allowed, so the server never trusts the choice list
            presets = gr.Dropdown(choices=[], value=[], multiselect=True, allow_custom_value=True,
                                  label="Presets to compare with the baseline")
            custom = gr.Textbox(label="More preset specs (comma-separated, e.g. output:0-2@0-0.5)")
            seeds = gr.Textbox("0, 1", label="Seeds (e.g. 0, 1, 5-7)")
            with gr.Row():
                steps = gr.Slider(limits.min_steps, limits.max_steps, value=defaults.steps, step=1, label="Steps")
                side = dict(precision=0, minimum=limits.min_size, maximum=limits.max_size, step=limits.size_multiple)
                width = gr.Number(defaults.width, label=f"Width ({limits.min_size}-{limits.max_size}, multiple of "
                                  f"{limits.size_multiple})", **side)
                height = gr.Number(defaults.height, label="Height", **side)
            with gr.Row():
                ip_weight = gr.Slider(limits.min_ip_weight, limits.max_ip_weight, value=defaults.ip_weight,
                                      step=0.05, label="Face (IP) weight")
                cn_scale = gr.Slider(limits.min_cn_scale, limits.max_cn_scale, value=defaults.cn_scale, step=0.05,
                                     label="IdentityNet scale")
                guidance = gr.Slider(limits.min_guidance, limits.max_guidance, value=defaults.guidance_scale,
                                     step=0.5, label="Guidance scale")
            run = gr.Button("Generate pairs", variant="primary")
            summary = gr.Markdown("")
            results = gr.Dataframe(headers=RESULT_COLUMNS, interactive=False)
    private: dict[str, Any] = dict(api_visibility="private")
    unlock.click(fns["unlock"], [password], [form, presets, message], **private)
    password.submit(fns["unlock"], [password], [form, presets, message], **private)
    run.click(fns["generate"], [password, face, prompt, negative, presets, custom, seeds, steps, width, height,
                                ip_weight, cn_scale, guidance], [summary, results],
              concurrency_limit=1, concurrency_id="generate", **private)

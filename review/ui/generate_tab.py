"""The Generate tab (admin only): upload a face, write a prompt, pick presets, seeds and settings, make pairs.

The admin password (``REVIEW_ADMIN_PASSWORD``) is checked on the server by every handler on every call
(``Services.check_admin``: constant-time compare, failures rate-limited per address). One successful unlock makes
the page (its Gradio session) an admin page on the server: Generate, Export and the leaderboard then need no
password again. A Hugging Face user on ``REVIEW_HF_ADMINS`` unlocks by logging in.
Preset names reach the page only after a successful unlock, so a reviewer's page never carries them.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import gradio as gr

from review.inputs import InputError, Limits, validate_settings
from review.trials import VoteRefused
from review.ui.review_tab import request_address
from review.ui.services import GenerateJob, Services, clean_presets
from review.uploads import read_upload

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["pair_id", "preset", "seed", "layer_count", "ssim", "note"]


def make_job(services: Services, face: Any, prompt: Any, negative: Any, presets: Any, custom: Any, seeds: Any,
             steps: Any, width: Any, height: Any, ip_weight: Any, cn_scale: Any, guidance: Any) -> GenerateJob:
    """Check the form and build the job; VoteRefused with a readable message otherwise."""
    if not isinstance(face, str) or not face:
        raise VoteRefused("Upload a reference face first.")
    try:
        guidance_f = float(guidance)
    except (TypeError, ValueError):
        raise VoteRefused("Guidance must be a number.") from None
    if not 0.0 <= guidance_f <= 30.0:
        raise VoteRefused("Guidance must be between 0 and 30.")
    specs = clean_presets(presets if isinstance(presets, list) else [], custom)
    try:  # the same checks and messages as the batch CLI: review/uploads.py, review/inputs.py
        upload = read_upload(face)
        settings = validate_settings(prompt, negative, list(specs), seeds, steps, width, height, ip_weight,
                                     cn_scale, limits=Limits(max_size=services.config.max_side,
                                                             max_seeds=services.config.max_seeds))
    except InputError as exc:
        raise VoteRefused(str(exc)) from None
    folder = services.dirs.root / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    face_path = folder / f"{secrets.token_hex(16)}.png"  # the decoded, upright RGB upload
    upload.image.save(face_path)
    return GenerateJob(face_path=str(face_path), prompt=settings.prompt, negative_prompt=settings.negative_prompt,
                       presets=tuple(settings.presets), seeds=tuple(settings.seeds), steps=settings.steps,
                       width=settings.width, height=settings.height, ip_weight=settings.ip_weight,
                       cn_scale=settings.cn_scale, guidance_scale=guidance_f,
                       notes=tuple(upload.notes + settings.notes))


def handlers(services: Services) -> dict[str, Any]:
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
        if not services.generate_lock.acquire(blocking=False):
            raise gr.Error("Another generation is running; try again when it is done.", print_exception=False)
        try:
            progress(0.0, desc="Starting")
            rows = services.run_job(job, lambda fraction, text: progress(fraction, desc=text))
        except Exception as exc:
            logger.exception("generation failed")
            raise gr.Error(f"Generation failed: {exc}", print_exception=False) from None
        finally:
            services.generate_lock.release()
        table = [[r.get(c) for c in RESULT_COLUMNS] for r in rows]
        notes = "".join(f" Note: {n}" for n in job.notes)
        return [f"Made {len(rows)} pair(s); they are now in the review rotation.{notes}", table]

    return {"unlock": unlock, "generate": generate}


def build_generate_tab(services: Services) -> None:
    """The Generate tab; call inside ``gr.Tabs()``."""
    fns, enabled = handlers(services), bool(services.config.admin_password)
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
                face = gr.Image(label="Reference face", type="filepath", sources=["upload"], buttons=[],
                                height=256)
                with gr.Column():
                    prompt = gr.Textbox(label="Prompt", lines=2)
                    negative = gr.Textbox(label="Negative prompt", lines=1)
            # choices arrive with the unlock; custom values allowed, so the server never trusts the choice list
            presets = gr.Dropdown(choices=[], value=[], multiselect=True, allow_custom_value=True,
                                  label="Presets to compare with the baseline")
            custom = gr.Textbox(label="More preset specs (comma-separated, e.g. output:0-2@0-0.5)")
            seeds = gr.Textbox("0, 1", label="Seeds (e.g. 0, 1, 5-7)")
            with gr.Row():
                steps = gr.Slider(1, 150, value=30, step=1, label="Steps")
                width = gr.Number(1024, label="Width", precision=0)
                height = gr.Number(1024, label="Height", precision=0)
            with gr.Row():
                ip_weight = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Face (IP) weight")
                cn_scale = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="IdentityNet scale")
                guidance = gr.Slider(0.0, 15.0, value=5.0, step=0.5, label="Guidance scale")
            run = gr.Button("Generate pairs", variant="primary")
            summary = gr.Markdown("")
            results = gr.Dataframe(headers=RESULT_COLUMNS, interactive=False)
    private: dict[str, Any] = dict(api_visibility="private")
    unlock.click(fns["unlock"], [password], [form, presets, message], **private)
    password.submit(fns["unlock"], [password], [form, presets, message], **private)
    run.click(fns["generate"], [password, face, prompt, negative, presets, custom, seeds, steps, width, height,
                                ip_weight, cn_scale, guidance], [summary, results],
              concurrency_limit=1, concurrency_id="generate", **private)

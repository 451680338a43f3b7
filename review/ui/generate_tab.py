"""The Generate tab (admin only): upload a face, write a prompt, pick presets, seeds and settings, make pairs.

The admin password (``REVIEW_ADMIN_PASSWORD``) is checked on the server by every handler on every call
(``Services.check_admin``: constant-time compare, rate-limited per address); unlocking only shows the form.
Preset names reach the page only after a successful unlock, so a reviewer's page never carries them.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from review.trials import VoteRefused
from review.ui.review_tab import request_address
from review.ui.services import GenerateJob, Services, clean_presets, parse_seeds

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["pair_id", "preset", "seed", "layer_count", "ssim", "note"]


def _side(value: Any, name: str, limit: int) -> int:
    try:
        side = int(value)
    except (TypeError, ValueError):
        raise VoteRefused(f"{name} must be a whole number.") from None
    if not 64 <= side <= limit or side % 8:
        raise VoteRefused(f"{name} must be a multiple of 8 between 64 and {limit}.")
    return side


def make_job(services: Services, face: Any, prompt: Any, negative: Any, presets: Any, custom: Any, seeds: Any,
             steps: Any, width: Any, height: Any, ip_weight: Any, cn_scale: Any, guidance: Any) -> GenerateJob:
    """Check the form and build the job; VoteRefused with a readable message otherwise."""
    if not isinstance(face, str) or not face:
        raise VoteRefused("Upload a reference face first.")
    if not isinstance(prompt, str) or not prompt.strip():
        raise VoteRefused("Write a prompt.")
    try:
        steps_i, floats = int(steps), [float(ip_weight), float(cn_scale), float(guidance)]
    except (TypeError, ValueError):
        raise VoteRefused("Steps and weights must be numbers.") from None
    if not 1 <= steps_i <= 150:
        raise VoteRefused("Steps must be between 1 and 150.")
    if not all(0.0 <= f <= 30.0 for f in floats):
        raise VoteRefused("Weights and guidance must be between 0 and 30.")
    limit = services.config.max_side
    return GenerateJob(face_path=face, prompt=prompt.strip()[:2000], negative_prompt=str(negative or "")[:2000],
                       presets=clean_presets(presets if isinstance(presets, list) else [], custom),
                       seeds=parse_seeds(seeds, services.config.max_seeds), steps=steps_i,
                       width=_side(width, "Width", limit), height=_side(height, "Height", limit),
                       ip_weight=floats[0], cn_scale=floats[1], guidance_scale=floats[2])


def handlers(services: Services) -> dict[str, Any]:
    def unlock(password: Any, request: gr.Request) -> list[Any]:
        try:
            services.check_admin(password, request_address(request, services))
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
            services.check_admin(password, request_address(request, services))
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
        return [f"Made {len(rows)} pair(s); they are now in the review rotation.", table]

    return {"unlock": unlock, "generate": generate}


def build_generate_tab(services: Services) -> None:
    """The Generate tab; call inside ``gr.Tabs()``."""
    fns, enabled = handlers(services), bool(services.config.admin_password)
    with gr.Tab("Generate", id="generate"):
        gr.Markdown("Admin only. The password is checked on the server for every action." if enabled else
                    "Generation is disabled: no admin password is configured (set REVIEW_ADMIN_PASSWORD).")
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

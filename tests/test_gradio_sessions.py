"""The lazy per-session set-up (review/ui/gradio_sessions.py) answers exactly what Gradio's own would."""

from __future__ import annotations

from pathlib import Path

from fixtures_review import make_services
from gradio import state_holder

from review.ui import gradio_sessions
from review.ui.app import build_demo


def test_a_lazy_session_holds_the_same_configs_as_gradios_own(tmp_path: Path):
    demo = build_demo(make_services(tmp_path))  # applies the patch
    assert gradio_sessions.make_session_setup_lazy() and gradio_sessions._original_init is not None
    assert state_holder.SessionState.__init__ is gradio_sessions._lazy_init

    eager = object.__new__(state_holder.SessionState)
    gradio_sessions._original_init(eager, demo)  # Gradio's own __init__
    lazy = state_holder.SessionState(demo)
    assert isinstance(lazy.config_values, gradio_sessions.LazyConfigs)
    assert dict.__len__(lazy.config_values) == 0  # nothing computed at session start
    some = list(demo.blocks)[len(demo.blocks) // 2]
    lazy._update_value_in_config(some, "changed")  # Gradio touches one block: only it is computed
    eager._update_value_in_config(some, "changed")
    assert dict.__len__(lazy.config_values) == 1
    by_id = lambda state: {c["id"]: c for c in state.components}  # noqa: E731
    assert by_id(lazy) == by_id(eager)  # the deep-link view: every block, the same configs
    assert len(lazy.config_values) == len(eager.config_values) == len(demo.blocks)
    assert lazy.state_data == eager.state_data and lazy.is_closed is eager.is_closed

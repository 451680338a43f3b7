"""What the tabs are given: the store, data folders, configuration, the generation job function, the admin check.

Nothing here imports Gradio or torch; ``app.py`` fills a :class:`Services` and ``review.ui.app.build_demo`` builds
the tabs from it. Handlers are plain functions of these services, so tests can call them without a browser.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cachetools import TTLCache

from review.store import Store, StoreError, StoreUnavailable
from review.study.served import ServedImages
from review.study.trials import RateLimiter, StudyConfig, VoteRefused

if TYPE_CHECKING:
    from review.generation.inputs import Submission

logger = logging.getLogger(__name__)

TINY_BANNER = "Offline tiny stack: random weights; images are noise, not faces."


@dataclass(frozen=True)
class DataDirs:
    """Folders under one data root (put the root on persistent storage on Spaces)."""

    root: Path
    images: Path  # generated images (opaque names, as the ``images`` table lists them)
    faces: Path  # uploaded reference faces
    exports: Path  # CSV/JSON exports (one random subfolder per request)

    @classmethod
    def under(cls, root: str | Path) -> DataDirs:
        """The folders under ``root`` (not created)."""
        root = Path(root)
        return cls(root=root, images=root / "images", faces=root / "faces", exports=root / "exports")

    def make(self) -> DataDirs:
        """Create the folders; returns self."""
        for folder in (self.root, self.images, self.faces, self.exports):
            folder.mkdir(parents=True, exist_ok=True)
        return self


@dataclass(frozen=True)
class GenerateJob:
    """One admin request from the Generate tab: the uploaded face at every seed x preset of a checked submission."""

    face_path: str  # the decoded upload, saved as PNG (removed after the job)
    submission: Submission  # prompt, presets, seeds and GenerationSettings, checked (review.generation.inputs)
    notes: tuple[str, ...] = ()  # what was fixed in the upload or settings (shown with the result)


# run_job(job, progress(fraction, text)) -> one summary row per pair made
JobRunner = Callable[[GenerateJob, Callable[[float, str], None]], list[dict[str, Any]]]
# () -> (table rows or DataFrame, plot or None)
BoardFn = Callable[[bool], Any]  # include_failing -> review.stats.board.BoardView
AllocationFn = Callable[[str], Mapping[str, float]]  # mode -> preset weights (0: not served); review.stats.allocation


class JobStopped(RuntimeError):
    """The app is shutting down: the job stopped between images; the message says what was kept."""


class StatusBoard:
    """A one-line status (e.g. demo pairs being generated) that the page polls; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._text, self._busy = "", False

    def set(self, text: str, *, busy: bool) -> None:
        """Set the line (``busy``: the page keeps polling)."""
        with self._lock:
            self._text, self._busy = text, busy
        logger.info("status: %s", text)

    def get(self) -> tuple[str, bool]:
        """(text, busy)."""
        with self._lock:
            return self._text, self._busy


@dataclass(frozen=True)
class AppConfig:
    """The app's configuration: the study, the admin password, proxy trust, Hugging Face lists, limits."""

    study: StudyConfig = field(default_factory=StudyConfig)
    admin_password: str | None = None  # REVIEW_ADMIN_PASSWORD; None -> Generate disabled, exports redacted
    banner: str = ""  # shown on top (the tiny-stack warning)
    preset_choices: tuple[str, ...] = ()  # selective presets offered by the Generate tab
    stack: str = "tiny"  # engine name shown to the admin
    trust_proxy: bool = False  # take the client address from X-Forwarded-For (behind the Spaces proxy)
    proxy_hops: int = 1  # trusted proxies in front of the app, each appending to X-Forwarded-For (client_address)
    client_salt: str = field(default_factory=lambda: secrets.token_hex(16))  # hashes client addresses
    hf_allow: frozenset[str] = frozenset()  # identity=hf: Hugging Face user names allowed to review (empty: any)
    hf_admins: frozenset[str] = frozenset()  # Hugging Face user names that are admins once logged in
    max_seeds: int = 16  # per Generate call
    max_side: int = 2048  # largest width/height the Generate tab accepts

    def __post_init__(self) -> None:
        if self.proxy_hops < 1:
            raise ValueError(f"proxy_hops must be at least 1, not {self.proxy_hops}")


@dataclass
class Services:
    """Everything the tabs use: store, folders, configuration, job runner, leaderboard, status, admin check."""

    store: Store
    dirs: DataDirs
    config: AppConfig = field(default_factory=AppConfig)
    run_job: JobRunner | None = None  # None -> the Generate tab says generation is unavailable
    board: BoardFn | None = None  # the leaderboard tab's data; None -> placeholder text
    board_version: Callable[[], Any] | None = None  # changes when votes/pairs arrive (auto-refresh)
    status: StatusBoard = field(default_factory=StatusBoard)
    admin_limiter: RateLimiter | None = None
    generate_lock: threading.Lock = field(default_factory=threading.Lock)
    served: ServedImages | None = None  # the review images' URLs (review/ui/image_route.py)
    allocation: AllocationFn | None = None  # adaptive allocation for the review desk; None: every preset
    stopping: threading.Event = field(default_factory=threading.Event)  # set on SIGTERM: no new jobs
    admin_ttl_s: float = 8 * 3600.0  # how long an unlocked page (Gradio session) stays an admin page
    _admins: TTLCache = field(init=False)  # unlocked sessions; each expires admin_ttl_s after its unlock
    _admins_lock: threading.Lock = field(default_factory=threading.Lock, init=False)  # cachetools: not thread-safe

    def __post_init__(self) -> None:
        self._admins = TTLCache(math.inf, ttl=self.admin_ttl_s)
        s = self.config.study
        if self.admin_limiter is None:
            self.admin_limiter = RateLimiter(s.admin_burst, s.admin_per_s)
        if self.served is None:
            self.served = ServedImages(max_age_s=s.serve_max_age_s)

    def check_admin(self, password: object, address: str, session: object = None) -> None:
        """Refuse unless this page (Gradio ``session``) was unlocked, or the admin password is configured and
        ``password`` matches (constant-time compare; the page is then unlocked for ``admin_ttl_s``). Only
        failures spend the per-address attempt budget. Called by every admin handler, on every call."""
        if self.is_admin(session):
            return
        expected = self.config.admin_password
        if not expected:
            raise VoteRefused("Admin functions are disabled: no admin password is configured "
                              "(set REVIEW_ADMIN_PASSWORD).")
        assert self.admin_limiter is not None
        key = f"admin:{address}"
        if not self.admin_limiter.has_token(key):
            raise VoteRefused("Too many password attempts; please slow down and try again in a moment.")
        given = password.encode("utf-8") if isinstance(password, str) else b""
        if not hmac.compare_digest(given, expected.encode("utf-8")):
            self.admin_limiter.allow(key)  # a failure spends one attempt
            logger.warning("admin password refused for client %s", self.client_tag(address))
            raise VoteRefused("Wrong admin password.")
        self.grant_admin(session)

    def grant_admin(self, session: object, hf_user: str | None = None) -> bool:
        """Make ``session`` an admin page (after the password, or for a Hugging Face user on ``hf_admins``)."""
        if not isinstance(session, str) or not session:
            return False
        if hf_user is not None and hf_user.strip().lower() not in self.config.hf_admins:
            return False
        with self._admins_lock:
            self._admins[session] = True
        logger.info("admin page unlocked%s", f" by Hugging Face user {hf_user}" if hf_user else "")
        return True

    def is_admin(self, session: object) -> bool:
        """Whether ``session`` was unlocked less than ``admin_ttl_s`` ago."""
        if not isinstance(session, str) or not session:
            return False
        with self._admins_lock:
            return session in self._admins

    def leaderboard_allowed(self, session: object) -> bool:
        """The leaderboard answers everyone once the study opens it (``leaderboard_public``), else admin pages."""
        return self.config.study.leaderboard_public or self.is_admin(session)

    def client_tag(self, address: str) -> str:
        """A salted hash of the client address (what the votes table keeps; never the address itself)."""
        return hashlib.sha256(f"{self.config.client_salt}:{address}".encode()).hexdigest()[:16]


def client_address(headers: Any, host: str | None, trust_proxy: bool, proxy_hops: int = 1) -> str:
    """The client address: the socket peer, or with a trusted proxy the X-Forwarded-For entry that proxy wrote.

    Every proxy appends the address it received the request from, so with ``proxy_hops`` trusted proxies the
    client is the ``proxy_hops``-th entry from the right; everything left of it came with the request and is
    whatever the client wanted it to be. A header with fewer entries than hops holds only proxy-written ones: its
    left-most entry is used. Several header lines count as one comma-separated list, in order."""
    if trust_proxy and headers is not None:
        # a class method only: a header named "getlist" must not pass for one (Gradio's dict-backed headers)
        lines = headers.getlist("x-forwarded-for") if callable(getattr(type(headers), "getlist", None)) else \
            [headers.get("x-forwarded-for") or ""]
        entries = [e.strip() for line in lines for e in str(line).split(",") if e.strip()]
        if entries:
            return entries[-proxy_hops] if len(entries) >= proxy_hops else entries[0]
    return host or "unknown"


def storage_message(exc: StoreError, consequence: str) -> str:
    """A storage fault in words for the page: what is wrong and what it means for the user (no path)."""
    if isinstance(exc, StoreUnavailable):
        what = {"busy": "The study database is busy (another program is writing to it)",
                "replaced": "The study database file was removed or replaced on the server"}.get(
            exc.kind, f"The study database cannot be written: {exc.reason}")
    else:
        what = "The study database refused the change"
    return f"{what}. {consequence}"

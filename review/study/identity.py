"""Reviewer identities minted and signed by the server, invite links, and Hugging Face reviewers.

The signing key is the database's install secret (``Store.install_secret``: random, made at first start, kept with
the database), never a constant. A reviewer token is ``r1.<install tag>.<kind>.<reviewer id>.<mac>``: the page
keeps it (in its BrowserState) and hands it back on the next page load; the server believes only tokens it signed,
so a client can neither choose an id nor take another reviewer's. Kinds: ``a`` anonymous (``identity=open``),
``i`` invite, ``h`` Hugging Face. A token of another installation (another tag) counts as no token; one with this
installation's tag and a wrong mac was tampered with and is refused.

An invite link carries ``i1.<invite id>.<mac>``; the invite id is in the ``invites`` table until it is used
once (by one reviewer, who keeps their reviewer token) or expires. Hugging Face reviewers get a keyed hash of
their user name as id, so the database holds no user names.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from typing import TYPE_CHECKING, NamedTuple

from review.study.trials import VoteRefused

if TYPE_CHECKING:
    from review.store import Store

logger = logging.getLogger(__name__)

KINDS = {"a": "anonymous", "i": "invite", "h": "hf"}
CODES = {kind: code for code, kind in KINDS.items()}
_TOKEN_RE = re.compile(r"^r1\.([0-9a-f]{8})\.([aih])\.([0-9a-f]{32})\.([0-9a-f]{32})$")
_INVITE_RE = re.compile(r"^i1\.([0-9a-f]{32})\.([0-9a-f]{32})$")


class IdentityRefused(VoteRefused):
    """A reviewer token or invite the server does not accept; the message is safe for the page."""


class Reviewer(NamedTuple):
    """A reviewer: an opaque id and how it was admitted."""
    id: str  # 32 hex
    kind: str  # anonymous | invite | hf


class Signer:
    """HMAC-SHA256 with the install secret, one purpose string per use."""

    def __init__(self, secret: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", secret or ""):
            raise ValueError("the install secret must be 64 hex characters")
        self._key = bytes.fromhex(secret)
        self.tag = self._mac("install")[:8]

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._key, "|".join(parts).encode(), hashlib.sha256).hexdigest()[:32]

    # -- reviewers ------------------------------------------------------------------------------------------
    def new_reviewer(self, kind: str) -> Reviewer:
        """A fresh reviewer with a random 128-bit id."""
        return Reviewer(secrets.token_hex(16), kind)

    def token(self, reviewer: Reviewer) -> str:
        """The token the page keeps for ``reviewer``."""
        code = CODES[reviewer.kind]
        return f"r1.{self.tag}.{code}.{reviewer.id}.{self._mac('reviewer', code, reviewer.id)}"

    def read_token(self, token: object) -> Reviewer | None:
        """The reviewer a token names; None for no token or another installation's; IdentityRefused when it was
        altered."""
        if not isinstance(token, str) or not token:
            return None
        match = _TOKEN_RE.fullmatch(token)
        if match is None or match.group(1) != self.tag:
            return None
        _, code, reviewer_id, mac = match.groups()
        if not hmac.compare_digest(mac, self._mac("reviewer", code, reviewer_id)):
            raise IdentityRefused("The reviewer key kept in this browser is not valid (it was changed). "
                                  "Clear this site's data in the browser, then reload the page.")
        return Reviewer(reviewer_id, KINDS[code])

    def hf_reviewer(self, username: str) -> Reviewer:
        """A Hugging Face user's reviewer id: a keyed hash of the lower-cased user name."""
        return Reviewer(self._mac("hf", username.strip().lower()), "hf")

    # -- invites --------------------------------------------------------------------------------------------
    def new_invite(self) -> tuple[str, str]:
        """(invite id for the ``invites`` table, the token for the link)."""
        invite_id = secrets.token_hex(16)
        return invite_id, f"i1.{invite_id}.{self._mac('invite', invite_id)}"

    def read_invite(self, token: object) -> str:
        """The invite id of a link's token, or IdentityRefused (not one of ours, or altered)."""
        match = _INVITE_RE.fullmatch(token.strip()) if isinstance(token, str) else None
        if match is None or not hmac.compare_digest(match.group(2), self._mac("invite", match.group(1))):
            raise IdentityRefused("This invite link is not valid: check that it was copied whole.")
        return match.group(1)

    def browser_secret(self) -> str:
        """The key Gradio's BrowserState encrypts with (it is sent to the page: obfuscation only)."""
        return self._mac("browser-state")


def identify(signer: Signer, store: Store, setting: str, token: object, invite: object = None,
             hf_user: str | None = None, *, allowed: frozenset[str] = frozenset()) -> Reviewer:
    """The reviewer of a page load under the study's ``identity`` setting: a known token (any kind with ``open``,
    an invitee's with ``invite``), else a fresh anonymous reviewer (``open``), a claimed invite (``invite``) or
    the Hugging Face user (``hf``, on ``allowed`` when it is not empty). IdentityRefused, with nothing stored, for
    an altered token, a bad, used or expired invite, or a missing or unlisted login."""
    known = signer.read_token(token)
    if setting == "hf":
        if not hf_user:
            raise IdentityRefused("This study needs a Hugging Face login: use the 'Sign in' button, then reload.")
        if allowed and hf_user.strip().lower() not in allowed:
            raise IdentityRefused("This Hugging Face account is not on this study's list of reviewers.")
        reviewer = signer.hf_reviewer(hf_user)
    elif known is not None and (setting == "open" or known.kind == "invite"):
        reviewer = known
    elif setting == "invite":
        if not invite:
            raise IdentityRefused("This study is by invitation: open the invite link you were given.")
        return claim_invite(signer, store, invite)
    else:
        reviewer = signer.new_reviewer("anonymous")
    store.get_or_create_reviewer(reviewer.id, reviewer.kind)
    return reviewer


def claim_invite(signer: Signer, store: Store, token: object) -> Reviewer:
    """A new invite reviewer bound to the link's invite (once); IdentityRefused otherwise, nothing stored."""
    invite_id = signer.read_invite(token)
    row = store.get_invite(invite_id)
    if row is None:
        raise IdentityRefused("This invite link is not valid for this study.")
    if row["reviewer_id"] is not None:
        raise IdentityRefused("This invite link was already used. Open the study in the browser where you "
                              "first used it, or ask for a new link.")
    reviewer = signer.new_reviewer("invite")
    if not store.claim_invite(invite_id, reviewer.id):
        raise IdentityRefused("This invite link has expired or was just used; ask for a new link.")
    logger.info("invite %s claimed by reviewer %s", invite_id[:8], reviewer.id[:8])
    return reviewer


def parse_allow_list(text: str | None) -> frozenset[str]:
    """'alice, Bob' -> {'alice', 'bob'} (Hugging Face user names, compared lower-case)."""
    return frozenset(n.strip().lower() for n in (text or "").split(",") if n.strip())

"""The analyst's session id: made once per browser session and kept in the URL (?session=…), so a
refresh, a bookmark or a shared link stays in the same history session."""
from __future__ import annotations

import re
import uuid

import streamlit as st

PARAM = "session"
_STATE_KEY = "loupe-session-id"
_VALID = re.compile(r"^[0-9a-f]{12}$")


def session_id() -> str:
    """This browser session's id: from session state, else from the URL, else a new one; always in the URL."""
    sid = st.session_state.get(_STATE_KEY)
    from_url = st.query_params.get(PARAM, "")
    if not sid:
        sid = from_url if _VALID.match(from_url) else uuid.uuid4().hex[:12]
        st.session_state[_STATE_KEY] = sid
    if from_url != sid:  # a page switch may drop query parameters: put it back
        st.query_params[PARAM] = sid
    return sid

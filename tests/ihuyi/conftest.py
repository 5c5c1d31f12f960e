"""Fixtures of the ihuyi tests."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from ihuyi.transport import Session, new_session


@pytest.fixture
def session() -> Iterator[Session]:
    """A session of its own (the client's default is shared by the whole process)."""
    with new_session() as s:
        yield s

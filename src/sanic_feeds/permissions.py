"""Channel patterns: which channels a connection may subscribe to or publish on. Pure logic.

A pattern is a channel name (``news``), a prefix ending in ``*`` that matches any rest of
a name (``chat:*``; ``*`` alone matches every channel), and may hold ``$sub``, which
stands for the user the connection belongs to (``user:$sub``, ``dm:$sub:*``). A ``*``
anywhere but at the end, and a user's name that itself holds ``*`` or ``$sub``, are
plain text, never wildcards.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Access", "ChannelPatterns", "expand_pattern"]

_WILDCARD = "*"
_USER = "$sub"


def expand_pattern(pattern: str, user: str | None) -> tuple[str, bool] | None:
    """``(text, wildcard)`` of ``pattern`` for ``user``: a channel name (``wildcard``
    False) or the prefix a name must start with (True), with ``$sub`` replaced by
    ``user``; None for a pattern holding ``$sub`` when ``user`` is None (it matches nothing).
    """
    wildcard = pattern.endswith(_WILDCARD)
    text = pattern[: -len(_WILDCARD)] if wildcard else pattern
    if _USER in text:
        if user is None:
            return None
        # Split first: a user named "*" or "$sub" stays text.
        text = user.join(text.split(_USER))
    return text, wildcard


class ChannelPatterns:
    """Patterns compiled for one user: :meth:`allows` is a set lookup and one
    ``str.startswith``, whatever the number of patterns.

    ``user`` None (an anonymous connection): patterns holding ``$sub`` match nothing.
    """

    __slots__ = ("_everything", "_exact", "_prefixes")

    def __init__(self, patterns: Iterable[str], user: str | None = None) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        for pattern in patterns:
            expanded = expand_pattern(pattern, user)
            if expanded is None:
                continue
            text, wildcard = expanded
            if wildcard:
                prefixes.append(text)
            else:
                exact.add(text)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)
        self._everything = "" in self._prefixes

    @classmethod
    def everything(cls) -> ChannelPatterns:
        return cls((_WILDCARD,))

    @property
    def allows_everything(self) -> bool:
        return self._everything

    @property
    def allows_nothing(self) -> bool:
        return not self._exact and not self._prefixes

    def allows(self, channel: str) -> bool:
        return channel in self._exact or channel.startswith(self._prefixes)

    def __or__(self, other: ChannelPatterns) -> ChannelPatterns:
        union = ChannelPatterns(())
        union._exact = self._exact | other._exact
        union._prefixes = self._prefixes + other._prefixes
        union._everything = self._everything or other._everything
        return union

    def __repr__(self) -> str:
        shown = sorted(self._exact) + [prefix + _WILDCARD for prefix in self._prefixes]
        return f"ChannelPatterns({shown!r})"


class Access:
    """What one connection may do: subscribe to (and read the presence and history of)
    the channels ``subscribe`` allows, publish where ``publish`` allows.

    ``user`` is None for a connection that showed no identity: refusing it means "show
    who you are" (``unauthorized``) rather than "not you" (``forbidden``).
    """

    __slots__ = ("publish", "subscribe", "user")

    def __init__(
        self, subscribe: ChannelPatterns, publish: ChannelPatterns, user: str | None
    ) -> None:
        self.subscribe = subscribe
        self.publish = publish
        self.user = user

    @classmethod
    def everything(cls) -> Access:
        """Identity and permissions off: every channel, for anyone."""
        return cls(ChannelPatterns.everything(), ChannelPatterns.everything(), None)

    def may_subscribe(self, channel: str) -> bool:
        return self.subscribe.allows(channel)

    def may_publish(self, channel: str) -> bool:
        return self.publish.allows(channel)

"""What runs inside a Sanic worker.

- ``node.py``: :class:`~.node.Node`, the domain service (join, leave, publish, presence,
  history, the connection registry, limits). It knows no Sanic: the handlers and the web
  edge depend on it.
- ``hub.py``, ``outbox.py``: the process's channels and fan-out; per-connection queues.
- ``connection.py``, ``websocket.py``: one client, and its socket after the upgrade.
- ``feed.py``, ``multiplex.py``: the ``/feed/<channel>`` and ``/ws`` sessions, over a Node.
- ``extension.py``, ``api.py``, ``app.py``: the web edge, the only modules that import
  Sanic (``tests/unit/test_layout.py`` checks it): routes, listeners, the upgrade and
  admission, the HTTP API, the app factory of ``sanic-feeds serve``.

Nothing is imported here, so that ``import sanic_feeds.server.node`` loads no Sanic.
"""

__all__: list[str] = []

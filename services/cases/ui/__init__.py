"""The partner web UI: server-rendered pages of the cases service at ``/`` (the JSON API stays at
``/api/v1``). ``pages.py`` holds the routes, ``session.py`` signing in and CSRF, ``i18n.py`` the
languages; templates, styles and translations sit beside them."""

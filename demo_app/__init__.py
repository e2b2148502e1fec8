"""The auction app that wstrace is demonstrated and measured on.

A FastAPI app with live auction rooms over WebSocket (``/ws/auction/{auctionID}``), a small
REST API and a page with a **Set For Auction** button, shaped like the app in
``websocket-call-chain.txt`` so that a trace of it reads like that walkthrough.
``demo_app.app:app`` is the ASGI app; ``demo_app.app:create_app(db_path)`` builds one on a
given SQLite file; ``python -m demo_app`` serves it.
"""

"""The admin REST API of server nodes: Starlette app, auth, schemas, served by uvicorn.

Plain modules, tested with Starlette's TestClient and against real nodes; the
supervised actor that serves it is ``omega.actors.admin``.
"""

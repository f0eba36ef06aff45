"""``bru ui``: MLflow's UI on the embedded tracking store and, with ``--optuna``,
optuna-dashboard on the Optuna storage, read-only, on this machine only."""

from __future__ import annotations

from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Annotated, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import typer

from bru_core.errors import ConfigError

from ._common import HomeOpt, StorageOpt, TrackingOpt, err

# optuna-dashboard has no login and shows every study of the storage: this machine only,
# whatever --host the MLflow UI is given.
DASHBOARD_HOST = "127.0.0.1"


def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    optuna: Annotated[
        bool,
        typer.Option("--optuna", help="Also serve optuna-dashboard on the Optuna storage (needs the dashboard extra)."),
    ] = False,
    optuna_port: Annotated[int, typer.Option(min=1, max=65535, help="optuna-dashboard's port on 127.0.0.1.")] = 8080,
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    optuna_storage: StorageOpt = None,
) -> None:
    """Open the MLflow UI on the embedded tracking store and, with --optuna, optuna-dashboard
    on the Optuna storage (Ctrl-C stops both)."""
    from bru_core.settings import get_settings, shown_url, sqlite_file

    settings = get_settings(home=home, tracking_uri=tracking_uri, optuna_storage=optuna_storage)
    if optuna:
        _import_dashboard()  # first: without the extra nothing else is worth checking
    mlflow_is_a_server = settings.artifact_location is None
    if mlflow_is_a_server and not optuna:
        raise ConfigError(
            f"--tracking-uri: {shown_url(settings.tracking)} is a tracking server already; open it in a browser"
        )
    database = sqlite_file(settings.tracking)
    if database is not None and not database.exists():
        raise ConfigError(f"--home: no MLflow store at {database} yet; run bru search (or bru campaign) first")
    if optuna and optuna_port == port and not mlflow_is_a_server:
        raise ConfigError(f"--optuna-port: {optuna_port} is the MLflow UI's --port; choose another")
    dashboard = _dashboard_server(settings, optuna_port) if optuna else None
    from bru_core.tracking import start_server

    process, server_log = None, None
    if mlflow_is_a_server:
        _say(f"MLflow: the tracking server {shown_url(settings.tracking)}; open it in a browser")
    else:
        server_log = settings.home_path / "logs" / "mlflow-ui.log"  # the server's own lines, off the terminal
        server_log.parent.mkdir(parents=True, exist_ok=True)
        _say(f"MLflow UI on http://{host}:{port} (store {shown_url(settings.tracking)}; its log: {server_log})")
        process = start_server(settings.tracking, settings.artifact_location, host, port, log_file=server_log)
    if not mlflow_is_a_server:  # read from the store's file: a server that is down retries for minutes
        for line in _campaign_pages(settings, f"http://{host}:{port}"):
            _say(line)
    if dashboard is not None:
        _say(f"optuna-dashboard on http://{DASHBOARD_HOST}:{optuna_port} (storage {shown_url(settings.optuna)})")
    _say("Ctrl-C stops " + ("both" if process is not None and dashboard is not None else "it"))
    _serve_until_stopped(process, dashboard, port, server_log)


def _campaign_pages(settings, ui: str, most: int = 20) -> list[str]:
    """A line per campaign (the most recently updated first) with the address of its runs,
    which opens the UI's "Model training" view (``tracking.runs_page``)."""
    from mlflow import MlflowClient

    from bru_core.tracking import runs_page

    try:
        experiments = MlflowClient(settings.tracking).search_experiments(
            filter_string="tags.`bru.campaign` LIKE '%'", max_results=most, order_by=["last_update_time DESC"]
        )
    except Exception:  # a server that does not answer yet, or a login refused: the UI itself still works
        return []
    return [f"  campaign {e.name}: {runs_page(ui, e.experiment_id)}" for e in experiments]


def _say(line: str) -> None:
    err.print(line, highlight=False, soft_wrap=True)  # an address is never cut in two


def _import_dashboard():
    try:
        import optuna_dashboard
    except ImportError:
        raise ConfigError("--optuna: optuna-dashboard is not installed; pip install 'bru-lab[dashboard]'") from None
    return optuna_dashboard


def _studies_storage(url: str):
    """Optuna's storage at ``url``, read as it is (no tables created, no schema upgraded),
    once it is known to hold a study; else the one line that says which command makes one."""
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    from bru_core.settings import shown_url, sqlite_file

    none_yet = f"--optuna-storage: no Optuna study in {shown_url(url)} yet; run bru search (or bru campaign run) first"
    database = sqlite_file(url)
    if database is not None and not database.exists():
        raise ConfigError(none_yet)  # SQLite would create an empty file on connecting
    engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}  # a restarted server is reconnected
    try:
        storage = RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=True, skip_table_creation=True)
        studies = storage.get_all_studies()
    except Exception as exc:  # a server that is down, a bad URL, a file that is no Optuna storage
        while exc.__cause__ is not None and not isinstance(exc, sqlalchemy.exc.DBAPIError):
            exc = exc.__cause__  # the database's own words, not Optuna's wrapper's guess
        if "no such table" in str(exc) or "UndefinedTable" in str(exc):
            raise ConfigError(none_yet) from None  # a database Optuna has not written to yet
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--optuna-storage: {shown_url(url)} cannot be read: {first}") from None
    if not studies:
        raise ConfigError(none_yet)
    return storage


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """The dashboard polls every few seconds; a line per request would bury the terminal."""


class _DashboardServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # an open request does not hold up Ctrl-C


def _read_only(app):
    """The dashboard can create, rename and delete studies and tell trials; bru finds its
    studies by name and counts their trials towards the equal budget, so here it only reads."""

    def guarded(environ, start_response):
        if environ["REQUEST_METHOD"] in ("GET", "HEAD"):
            return app(environ, start_response)
        start_response("405 Method Not Allowed", [("Content-Type", "application/json"), ("Allow", "GET, HEAD")])
        return [b'{"reason": "bru ui shows the studies read-only; bru search and bru campaign write them"}']

    return guarded


def _dashboard_server(settings, port: int) -> WSGIServer:
    """optuna-dashboard's WSGI app on DASHBOARD_HOST:port, bound (a taken port is told now)
    but not yet serving."""
    from wsgiref.simple_server import make_server

    app = _read_only(_import_dashboard().wsgi(_studies_storage(settings.optuna)))
    try:
        return make_server(DASHBOARD_HOST, port, app, server_class=_DashboardServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(
            f"--optuna-port: cannot listen on {DASHBOARD_HOST}:{port} ({exc.strerror or exc}); choose another port"
        ) from None


def _serve_until_stopped(process, dashboard: WSGIServer | None, port: int, log: Path | None = None) -> None:
    """Until Ctrl-C or a plain `kill` (or the MLflow UI ends by itself): then stop both,
    leaving no process behind."""
    import signal
    import threading

    from bru_core.tracking import stop_server

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, interrupt),
        signal.SIGINT: signal.getsignal(signal.SIGINT),
    }
    if dashboard is not None:
        threading.Thread(target=dashboard.serve_forever, name="optuna-dashboard", daemon=True).start()
    interrupted = False
    try:
        if process is not None:
            process.wait()
        else:
            threading.Event().wait()  # only the dashboard: serve until stopped
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for signum in previous:  # a second Ctrl-C must not cut the clean-up short (at most 10 s)
            signal.signal(signum, signal.SIG_IGN)
        if dashboard is not None:  # first: it stops at once, where MLflow takes seconds
            dashboard.shutdown()
            dashboard.server_close()
        if process is not None:
            stop_server(process)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not interrupted and process is not None and process.returncode:
        raise ConfigError(f"--port: the MLflow UI exited with code {process.returncode}; is port {port} taken? ({log})")

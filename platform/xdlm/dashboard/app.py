"""The dashboard's ASGI app: five pages rendered on the server from ``data`` by jinja2 templates,
their figures drawn in the browser by the plotly.js that ships inside the installed plotly
package (served from here: no CDN, works offline).

A page whose runs are live (RUNNING) marks itself so; its script then reloads the page's
``#live`` part every ``refresh_s`` seconds (the controls and the selection stay as they are).
"""

from __future__ import annotations

import logging
import mimetypes
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from xdlm.dashboard import data, figures, links
from xdlm.tracking.runs import make_client

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
ARTIFACT_PREFIXES = ("scaling/", "dashboard/", "trajectories/", "report/")
"""The artifact folders the dashboard serves (figures it shows or links)."""
PAGES = (("runs", "/", "Runs"), ("curves", "/curves", "Curves"), ("sweeps", "/sweeps", "Sweeps"),
         ("scaling", "/scaling", "Scaling"), ("trajectory", "/trajectory", "Trajectories"))


def plotly_js() -> Path:
    """plotly.min.js as bundled in the plotly Python package."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"plotly.min.js not found at {path}: reinstall plotly")
    return path


class Dashboard:
    """The pages over one tracking store. The MLflow UI answers at ``mlflow_url``, or (None) on
    ``mlflow_port`` of the host the browser reached the dashboard by."""

    def __init__(self, tracking_uri: str, mlflow_url: str | None = None, mlflow_port: int = 5000,
                 refresh_s: float = 10.0) -> None:
        self.tracking_uri = tracking_uri
        self.mlflow_url = mlflow_url.rstrip("/") if mlflow_url else None
        self.mlflow_port = mlflow_port
        self.refresh_s = refresh_s
        self.client = make_client(tracking_uri)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.filters["num"] = _num
        self.templates.env.filters["duration"] = _duration
        self.artifact_cache = Path(tempfile.mkdtemp(prefix="xdlm-dashboard-"))

    # -- helpers -------------------------------------------------------------------------------
    def mlflow_base(self, request: Request) -> str:
        return self.mlflow_url or f"{request.url.scheme}://{request.url.hostname}:{self.mlflow_port}"

    def render(self, request: Request, template: str, page: str, live: bool = False, **context: Any) -> Response:
        base = self.mlflow_base(request)
        context.update(request=request, page=page, pages=PAGES, live=live, refresh_s=self.refresh_s,
                       tracking_uri=self.tracking_uri, mlflow_url=base,
                       run_link=lambda e, r, tab=None: links.run_url(base, e, r, tab),
                       experiment_link=lambda e: links.experiment_url(base, e),
                       message=request.query_params.get("message"))
        return self.templates.TemplateResponse(request, template, context)

    # -- pages ---------------------------------------------------------------------------------
    def runs(self, request: Request) -> Response:
        q = request.query_params
        rows = data.runs_table(self.client)
        wanted = {name: q.get(name) or None for name in data.FILTERS}
        shown = data.filter_rows(rows, **wanted)
        return self.render(request, "runs.html", "runs", live=any(r.live for r in shown), rows=shown,
                           total=len(rows), options=data.filter_options(rows), wanted=wanted,
                           experiments=data.experiments(self.client))

    def curves(self, request: Request) -> Response:
        q = request.query_params
        chosen = q.getlist("run")
        all_rows = data.runs_table(self.client)
        by_id = {r.run_id: r for r in all_rows}
        rows = [by_id[r] for r in chosen if r in by_id]
        keys = data.metric_keys(rows)
        metric = q.get("metric") if q.get("metric") in keys else (keys[0] if keys else None)
        x_axis = q.get("x") if q.get("x") in data.X_AXES else "tokens"
        weight = _clamp(q.get("smooth"), 0.0, 0.99, 0.0)
        log_x, log_y = q.get("logx") == "1", q.get("logy") == "1"
        figure, summary = None, []
        if metric and rows:
            series = [data.metric_series(self.client, r.run_id, metric, x_axis, weight, label=_label(r)) for r in rows]
            figure = figures.curves_figure(series, metric, x_axis, log_x, log_y, smoothed=weight > 0)
            summary = [(r, s.y[-1] if s.y else None, s.x[-1] if s.x else None) for r, s in zip(rows, series, strict=True)]
        pickable = [r for r in all_rows if r.kind in ("train", "trial")][:50]
        return self.render(request, "curves.html", "curves", live=any(r.live for r in rows), rows=rows,
                           keys=keys, metric=metric, x_axis=x_axis, x_axes=data.X_AXES, weight=weight,
                           log_x=log_x, log_y=log_y, figure=figure, summary=summary, pickable=pickable,
                           chosen=chosen, query=str(request.url.query),
                           compare_link=links.compare_url(self.mlflow_base(request), [r.experiment_id for r in rows],
                                                          [r.run_id for r in rows]) if len(rows) > 1 else None)

    def sweeps(self, request: Request) -> Response:
        found = data.sweeps(self.client)
        wanted = request.query_params.get("run")
        chosen = next((s for s in found if s.run_id == wanted), found[0] if found else None)
        report = figure = headers = table = None
        points: list[dict[str, Any]] = []
        if chosen is not None:
            report = data.sweep_report(chosen.directory)
            if report is not None:
                headers, table = data.report_table(report)
                points = data.frontier_points(report)
                if points:
                    figure = figures.pareto_figure(points, report.x_label, report.y_label,
                                                   f"sweep {report.name}: understanding vs few-step generation")
        trial_runs = {r.run_id: r for r in data.runs_table(self.client)} if chosen else {}
        return self.render(request, "sweeps.html", "sweeps", live=bool(chosen and chosen.status == "RUNNING"),
                           sweeps=found, chosen=chosen, report=report, figure=figure, headers=headers, table=table,
                           points=points, trial_runs=trial_runs)

    def scaling(self, request: Request) -> Response:
        analyses = data.scaling_analyses(self.client)
        blocks = {a.run_id: data.layout_json(a.fit, "") for a in analyses if a.fit is not None}
        return self.render(request, "scaling.html", "scaling", analyses=analyses, blocks=blocks)

    def trajectory(self, request: Request) -> Response:
        q = request.query_params
        rows = data.trajectory_runs(data.runs_table(self.client))
        chosen = next((r for r in rows if r.run_id == q.get("run")), rows[0] if rows else None)
        files, payload, frames, figure, artifact, sample = [], None, None, None, None, 0
        if chosen is not None:
            files = data.trajectory_files(self.client, chosen.run_id)
            artifact = q.get("artifact") if q.get("artifact") in files else (chosen.trajectory if chosen.trajectory in files
                                                                             else (files[-1] if files else None))
            if artifact:
                payload = data.load_trajectory(self.client, chosen.run_id, artifact)
                sample = int(_clamp(q.get("sample"), 0, len(payload["samples"]) - 1, 0))
                frames = data.trajectory_frames(payload, sample)
                figure = figures.trajectory_figure(payload, sample)
        return self.render(request, "trajectory.html", "trajectory", rows=rows, chosen=chosen, files=files,
                           artifact=artifact, payload=payload, frames=frames, figure=figure, sample=sample,
                           colours=figures.EVENT_COLOURS, event_labels=figures.EVENT_LABELS)

    # -- files and actions ---------------------------------------------------------------------
    def artifact(self, request: Request) -> Response:
        run_id, path = request.query_params.get("run", ""), request.query_params.get("path", "")
        if not path.startswith(ARTIFACT_PREFIXES) or ".." in path.split("/"):
            raise HTTPException(404, f"not an artifact the dashboard serves: {path!r}")
        target = self.artifact_cache / run_id
        target.mkdir(parents=True, exist_ok=True)
        try:
            local = self.client.download_artifacts(run_id, path, str(target))
        except Exception as err:
            raise HTTPException(404, f"{run_id}/{path}: {err}") from None
        media = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return FileResponse(local, media_type=media)

    async def log_figures(self, request: Request) -> Response:
        """Log the figure of the page the form was on to MLflow (``dashboard/`` artifacts)."""
        _same_origin(request)
        # a plain urlencoded form, parsed here: starlette's parser needs python-multipart
        form = FormData(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
        kind, back = form.get("kind"), str(form.get("back") or "/")
        try:
            logged = self._log(kind, form)
            message = f"logged {', '.join(logged)} to MLflow"
        except (KeyError, ValueError) as err:
            message = f"nothing logged: {err}"
        # back to the page the form was on (its path only: never a redirect to another site)
        return RedirectResponse(f"{urlparse(back).path or '/'}?{_requery(back, message)}", status_code=303)

    def _log(self, kind, form) -> list[str]:
        if kind == "curves":
            run_ids = form.getlist("run")
            metric, x_axis = str(form["metric"]), str(form.get("x") or "step")
            rows = {r.run_id: r for r in data.runs_table(self.client)}
            series = [data.metric_series(self.client, r, metric, x_axis, label=_label(rows[r])) for r in run_ids if r in rows]
            if not series:
                raise ValueError("no runs selected")
            figure = figures.curves_figure(series, metric, x_axis)
            name = f"curves_{metric.replace('/', '_')}_vs_{x_axis}"
            return [p for r in run_ids for p in figures.log_figure(self.client, r, name, figure)]
        if kind == "pareto":
            sweep = next((s for s in data.sweeps(self.client) if s.run_id == form["run"]), None)
            report = data.sweep_report(sweep.directory if sweep else None)
            points = data.frontier_points(report) if report else []
            if not points:
                raise ValueError("the sweep has no completed configuration to place yet")
            figure = figures.pareto_figure(points, report.x_label, report.y_label, f"sweep {report.name}")
            return figures.log_figure(self.client, sweep.run_id, "pareto", figure)
        if kind == "trajectory":
            run_id, artifact = str(form["run"]), str(form["artifact"])
            payload = data.load_trajectory(self.client, run_id, artifact)
            sample = int(form.get("sample") or 0)
            stem = Path(artifact).stem + (f"_sample{sample}" if sample else "")
            return figures.log_figure(self.client, run_id, stem, figures.trajectory_figure(payload, sample))
        raise ValueError(f"unknown figure kind {kind!r}")


def _requery(back: str, message: str) -> str:
    pairs = [(k, v) for k, v in parse_qsl(urlparse(back).query, keep_blank_values=True) if k != "message"]
    return urlencode([*pairs, ("message", message)])


def _same_origin(request: Request) -> None:
    """Refuse a form posted from another site (the dashboard writes to MLflow when asked)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin and urlparse(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "cross-origin request refused")


def _label(row: data.RunRow) -> str:
    return f"{row.name} (k={row.k})" if row.k is not None else row.name


def _clamp(text: str | None, low: float, high: float, default: float) -> float:
    try:
        value = float(text) if text not in (None, "") else default
    except ValueError:
        return default
    return min(max(value, low), high)


def _num(value: Any, digits: int = 4) -> str:
    """Compact numbers for tables: 10107904 -> 10.1M (digits=3), 0.000123 -> 0.000123."""
    if value is None:
        return "-"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{unit}"
    return f"{value:.{digits}g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def create_app(tracking_uri: str, mlflow_url: str | None = None, mlflow_port: int = 5000,
               refresh_s: float = 10.0) -> Starlette:
    board = Dashboard(tracking_uri, mlflow_url, mlflow_port, refresh_s)

    def plotly(request: Request) -> Response:
        return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/", board.runs), Route("/curves", board.curves), Route("/sweeps", board.sweeps),
        Route("/scaling", board.scaling), Route("/trajectory", board.trajectory),
        Route("/artifact", board.artifact), Route("/log", board.log_figures, methods=["POST"]),
        Route("/health", health), Route("/static/plotly.min.js", plotly),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.dashboard = board
    return app

"""``xdlm dashboard``: the MLflow UI over the project's tracking store, and beside it the views
MLflow cannot draw (runs at a glance, overlaid curves against tokens or FLOPs, a sweep's Pareto
frontier while it runs, scaling fits, denoising trajectories).

- ``links``: URLs into the MLflow UI (one place to adjust them);
- ``data``: what each page shows, read from MLflow through its client API (no web code);
- ``figures``: those numbers as plotly figures, and as HTML + PNG artifacts of a run;
- ``app``: the ASGI app (starlette + jinja2 templates, plotly.js served from the plotly package);
- ``serve``: starting the MLflow UI and the app side by side.

The package sits at the top of the import order, beside ``cli``: it reads what ``tune`` and
``eval`` wrote and imports them; nothing below imports it.
"""

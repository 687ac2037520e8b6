"""Submission to a remote Ray cluster through Ray's Job Submission API (docs/submit.md).

``client``: the dashboard address, the auth token and the jobs endpoints (list, status, logs,
stop). ``package``: what a submission carries (the validated job or sweep, its entrypoint and
runtime_env) and the submission itself.
"""

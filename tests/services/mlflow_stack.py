"""MLflow as deployed in production: ``mlflow server`` on a PostgreSQL backend store with its
artifacts proxied to an S3 bucket (here moto on loopback), started from ``LocalMlflowServer``.

``ProductionMlflow`` bundles the server, its database and where the artifacts land, and can
restart the database under the running server (``restart_postgres``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.services.postgres import LocalPostgres
from xdlm.tracking.server import LocalMlflowServer


@dataclass
class ProductionMlflow:
    server: LocalMlflowServer
    postgres: LocalPostgres
    bucket: str
    artifact_prefix: str
    """Artifacts are under ``s3://<bucket>/<artifact_prefix>/`` (``<experiment>/<run>/artifacts``)."""

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def artifacts_uri(self) -> str:
        return f"s3://{self.bucket}/{self.artifact_prefix}"

    def restart_postgres(self, down_s: float = 3.0) -> None:
        """Stop the database (cutting the server's connections), stay down, start it again."""
        self.postgres.restart(down_s)


def start_production_mlflow(root, postgres: LocalPostgres, s3_url: str, bucket: str,
                            prefix: str = "mlflow", database: str = "mlflow") -> ProductionMlflow:
    """Create ``database`` on ``postgres`` and start a server on it, artifacts to
    ``s3://bucket/prefix`` on the S3 endpoint ``s3_url`` (AWS credentials from the environment)."""
    uri = postgres.create_database(database)
    server = LocalMlflowServer(
        root, backend_store_uri=uri, artifacts_destination=f"s3://{bucket}/{prefix}",
        env={"MLFLOW_S3_ENDPOINT_URL": s3_url, "AWS_ENDPOINT_URL": s3_url,
             # checkpoints-sized artifacts go through the proxy in parts, as in production
             "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "true"})
    server.start()
    return ProductionMlflow(server, postgres, bucket, prefix)
